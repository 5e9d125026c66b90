package training

import (
	"fmt"
	"math"
)

// Argmax returns the index of the largest value of each row of out (rows
// of width values), as the class a classifier predicts.
func Argmax(out []float64, width int) []float64 {
	labels := make([]float64, len(out)/width)
	for r := range labels {
		row := out[r*width : (r+1)*width]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		labels[r] = float64(best)
	}
	return labels
}

// ScoreClassification returns the accuracy of pred, predicted class indexes,
// against the class indexes in truth, and the macro-averaged F1 score over
// the classes found in either (F1 = 2TP / (2TP + FP + FN), 0 for a class
// never predicted right). A class or label outside [0, classes) is an
// error naming the row. The trainers and the validation gates both score
// with it, so that a metric means one thing.
func ScoreClassification(pred, truth []float64, classes int) (accuracy, macroF1 float64, err error) {
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

// ScoreRegression returns the root mean squared error and the mean absolute
// error of pred against truth.
func ScoreRegression(pred, truth []float64) (rmse, mae float64) {
	for i, p := range pred {
		e := p - truth[i]
		rmse += e * e
		mae += math.Abs(e)
	}
	n := float64(len(pred))
	return math.Sqrt(rmse / n), mae / n
}
