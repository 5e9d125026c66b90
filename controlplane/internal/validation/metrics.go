package validation

import (
	"fmt"
	"math"
)

// These are the trainer's definitions (controlplane/internal/training),
// applied to ONNX Runtime's predictions.

func argmax(row []float64) int {
	best := 0
	for j, v := range row {
		if v > row[best] {
			best = j
		}
	}
	return best
}

// classification returns accuracy and the macro-averaged F1 over the
// classes found in either pred or truth (F1 = 2TP / (2TP + FP + FN)).
func classification(pred, truth []float64, classes int) (accuracy, macroF1 float64, err error) {
	tp, fp, fn := make([]int, classes), make([]int, classes), make([]int, classes)
	correct := 0
	for i, pv := range pred {
		p, t := int(pv), int(truth[i])
		if p < 0 || p >= classes || t < 0 || t >= classes {
			return 0, 0, fmt.Errorf("row %d: class %d or label %d is not one of the %d classes", i, p, t, classes)
		}
		if p == t {
			correct++
			tp[t]++
			continue
		}
		fp[p]++
		fn[t]++
	}
	seen := 0
	for c := range classes {
		if d := 2*tp[c] + fp[c] + fn[c]; d > 0 {
			macroF1 += 2 * float64(tp[c]) / float64(d)
			seen++
		}
	}
	if seen > 0 {
		macroF1 /= float64(seen)
	}
	if len(pred) > 0 {
		accuracy = float64(correct) / float64(len(pred))
	}
	return accuracy, macroF1, nil
}

func regression(pred, truth []float64) (rmse, mae float64) {
	for i, p := range pred {
		e := p - truth[i]
		rmse += e * e
		mae += math.Abs(e)
	}
	n := float64(len(pred))
	return math.Sqrt(rmse / n), mae / n
}
