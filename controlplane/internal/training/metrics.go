package training

import "math"

// argmax returns the index of the largest of each row of out.
func argmax(out []float64, width int) []int {
	labels := make([]int, len(out)/width)
	for r := range labels {
		row := out[r*width : (r+1)*width]
		for j, v := range row {
			if v > row[labels[r]] {
				labels[r] = j
			}
		}
	}
	return labels
}

// classification returns the accuracy of pred against the class indexes
// in truth, and the macro-averaged F1 score over the classes found in
// either (F1 = 2TP / (2TP + FP + FN), 0 for a class never predicted right).
func classification(pred []int, truth []float64, classes int) (accuracy, macroF1 float64) {
	tp, fp, fn := make([]int, classes), make([]int, classes), make([]int, classes)
	correct := 0
	for i, p := range pred {
		t := int(truth[i])
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
	return accuracy, macroF1
}

// regression returns the root mean squared error and the mean absolute
// error of pred against truth.
func regression(pred, truth []float64) (rmse, mae float64) {
	for i, p := range pred {
		e := p - truth[i]
		rmse += e * e
		mae += math.Abs(e)
	}
	n := float64(len(pred))
	return math.Sqrt(rmse / n), mae / n
}
