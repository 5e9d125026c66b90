package onnxbuild

import (
	"math"
	"testing"

	"github.com/shoalfleet/shoal/internal/onnxrt"
)

func TestMLPMatchesGoForward(t *testing.T) {
	onnxrt.MustInitForTest(t)
	for _, spec := range []MLPSpec{
		{Name: "clf", Layers: RandomLayers(1, 4, 8, 3), Classifier: true, Mean: []float32{1, 2, 3, 4}, Std: []float32{1, 0.5, 2, 1}},
		{Name: "reg", Layers: RandomLayers(2, 5, 6, 6, 2), Activation: Tanh},
		{Name: "mnist", Input: "pixels", Layers: RandomLayers(3, 784, 64, 10), Classifier: true},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			data, err := MLP(spec)
			if err != nil {
				t.Fatal(err)
			}
			s, err := onnxrt.Open(data, onnxrt.Options{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			in := spec.Layers[0].In
			x := make([]float32, 2*in)
			for i := range x {
				x[i] = float32(math.Sin(float64(i)))
			}
			name := spec.Input
			if name == "" {
				name = "input"
			}
			outs, err := s.Run([]onnxrt.Tensor{{Name: name, DataType: onnxrt.FP32, Shape: []int64{2, int64(in)}, Data: x}})
			if err != nil {
				t.Fatal(err)
			}
			got := outs[0].Data.([]float32)
			width := spec.Layers[len(spec.Layers)-1].Out
			for row := 0; row < 2; row++ {
				want := Forward(spec, x[row*in:(row+1)*in])
				for j, w := range want {
					if g := got[row*width+j]; math.Abs(float64(g-w)) > 1e-4*(1+math.Abs(float64(w))) {
						t.Fatalf("row %d out %d: ORT %g, Go %g", row, j, g, w)
					}
				}
				if spec.Classifier {
					labels := outs[1].Data.([]int64)
					best := 0
					for j := range want {
						if want[j] > want[best] {
							best = j
						}
					}
					if labels[row] != int64(best) {
						t.Errorf("row %d label %d; want %d", row, labels[row], best)
					}
				}
			}
		})
	}
}

func TestMLPRejectsBadShapes(t *testing.T) {
	l := RandomLayers(1, 3, 2)
	l[0].W = l[0].W[:5]
	if _, err := MLP(MLPSpec{Name: "bad", Layers: l}); err == nil {
		t.Fatal("bad weights accepted")
	}
	if _, err := MLP(MLPSpec{Name: "bad", Layers: append(RandomLayers(1, 3, 2), RandomLayers(1, 3, 2)...)}); err == nil {
		t.Fatal("mismatched layers accepted")
	}
}
