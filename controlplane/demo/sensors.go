package demo

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// The synthetic sensor data set: four readings whose means depend on the
// machine's state (normal, worn, failing). As the sensors age, one of the
// readings (sensorShifted) drifts.
var (
	sensorFeatures = []string{"temperature", "vibration", "current", "pressure"}
	sensorUnits    = []string{"°C", "g", "A", "kPa"}
	sensorBase     = []float64{60, 0.5, 8, 101}
	sensorStd      = []float64{5, 0.1, 1, 1.5}
	// sensorMeans are the class means in standard deviations from base.
	sensorMeans = [3][4]float64{
		{0, 0, 0, 0},     // normal
		{2, -1, 1, 0.5},  // worn
		{-1, 2, -1, 1.5}, // failing
	}
	sensorClasses = []string{"normal", "worn", "failing"}
)

const sensorShifted = 0 // temperature

// The data set's seed: its training rows are the same in every version.
const csvSeed1, csvSeed2 = 7, 11

// sensorRow draws a reading of class c, with shift standard deviations
// added to the shifted feature.
func sensorRow(r *rand.Rand, c int, shift float64) []float64 {
	row := make([]float64, len(sensorFeatures))
	for j := range row {
		z := sensorMeans[c][j] + r.NormFloat64()
		if j == sensorShifted {
			z += shift
		}
		row[j] = sensorBase[j] + z*sensorStd[j]
	}
	return row
}

// sensorCSV is the data set: n rows of the training distribution
// followed by field rows with the shift, each labelled (the classes in
// turn). The seed is fixed, so the first n rows are the same in every
// version.
func sensorCSV(n, field int, shift float64) string {
	r := rand.New(rand.NewPCG(csvSeed1, csvSeed2))
	var b strings.Builder
	b.WriteString(strings.Join(sensorFeatures, ",") + ",state\n")
	for i := 0; i < n+field; i++ {
		c := i % len(sensorClasses)
		sh := 0.0
		if i >= n {
			sh = shift
		}
		for _, v := range sensorRow(r, c, sh) {
			fmt.Fprintf(&b, "%.4f,", v)
		}
		b.WriteString(sensorClasses[c] + "\n")
	}
	return b.String()
}

// formatReading writes a reading with its units: "61.2°C 0.48g 8.1A
// 101.3kPa" (vibration with two decimals, the others with one).
func formatReading(x []float64) string {
	parts := make([]string, len(sensorUnits))
	for j, u := range sensorUnits {
		prec := 1
		if u == "g" {
			prec = 2
		}
		parts[j] = fmt.Sprintf("%.*f%s", prec, x[j], u)
	}
	return strings.Join(parts, " ")
}
