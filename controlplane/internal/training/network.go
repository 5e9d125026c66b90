package training

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/shoalfleet/shoal/internal/onnxbuild"
)

// network is a stack of dense layers, with act between them, trained in
// float64. Its parameters lie in one slice, layer by layer, each layer's
// weights (in×out, row-major, as onnxbuild.Dense) then its biases, so that
// the optimiser, the snapshot of the best epoch and the gradient checks
// treat them as one vector. A network with no hidden layer is a linear
// (or, with softmax, logistic) model.
type network struct {
	sizes  []int // input, hidden..., output widths
	act    onnxbuild.Activation
	params []float64
	grads  []float64

	// Workspace for a batch of rows, grown on demand: z[l] holds layer l's
	// pre-activations, a[l] its activations (hidden layers only), dz[l]
	// the loss's gradient with respect to z[l].
	rows     int
	z, a, dz [][]float64
}

func newNetwork(sizes []int, act onnxbuild.Activation, seed uint64) *network {
	n := &network{sizes: append([]int(nil), sizes...), act: act}
	total := 0
	for l := 0; l+1 < len(sizes); l++ {
		total += sizes[l]*sizes[l+1] + sizes[l+1]
	}
	n.params = make([]float64, total)
	n.grads = make([]float64, total)
	r := rand.New(rand.NewPCG(seed, streamInit))
	for l := 0; l < n.layers(); l++ {
		in, out := sizes[l], sizes[l+1]
		// He for a ReLU layer, Glorot otherwise: both keep the scale of
		// the activations about the same from layer to layer.
		limit := math.Sqrt(6 / float64(in+out))
		if l < n.layers()-1 && act == onnxbuild.ReLU {
			limit = math.Sqrt(6 / float64(in))
		}
		w := n.weights(l)
		for i := range w {
			w[i] = (r.Float64()*2 - 1) * limit
		}
	}
	return n
}

func (n *network) layers() int { return len(n.sizes) - 1 }

func (n *network) offset(l int) int {
	off := 0
	for i := 0; i < l; i++ {
		off += n.sizes[i]*n.sizes[i+1] + n.sizes[i+1]
	}
	return off
}

func (n *network) weights(l int) []float64 { return n.weightsOf(n.params, l) }
func (n *network) biases(l int) []float64  { return n.biasesOf(n.params, l) }

func (n *network) weightsOf(v []float64, l int) []float64 {
	off := n.offset(l)
	return v[off : off+n.sizes[l]*n.sizes[l+1]]
}

func (n *network) biasesOf(v []float64, l int) []float64 {
	off := n.offset(l) + n.sizes[l]*n.sizes[l+1]
	return v[off : off+n.sizes[l+1]]
}

func (n *network) grow(rows int) {
	if rows <= n.rows {
		return
	}
	n.rows = rows
	n.z = make([][]float64, n.layers())
	n.a = make([][]float64, n.layers())
	n.dz = make([][]float64, n.layers())
	for l := range n.layers() {
		n.z[l] = make([]float64, rows*n.sizes[l+1])
		n.dz[l] = make([]float64, rows*n.sizes[l+1])
		if l < n.layers()-1 {
			n.a[l] = make([]float64, rows*n.sizes[l+1])
		}
	}
}

// gemm is C = alpha·op(A)·op(B) + beta·C for row-major matrices; op(A) is
// m×k, op(B) k×n.
func gemm(tA, tB bool, m, n, k int, alpha float64, a []float64, b []float64, beta float64, c []float64) {
	if m == 0 || n == 0 {
		return
	}
	ta, lda := blas.NoTrans, k
	if tA {
		ta, lda = blas.Trans, m
	}
	tb, ldb := blas.NoTrans, n
	if tB {
		tb, ldb = blas.Trans, k
	}
	blas64.Implementation().Dgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, n)
}

// forward runs rows rows of x (row-major, sizes[0] wide) and returns the
// last layer's outputs (logits for classification), rows×sizes[L]. The
// slice is the network's workspace: valid until the next call.
func (n *network) forward(x []float64, rows int) []float64 {
	n.grow(rows)
	in := x
	for l := range n.layers() {
		ni, no := n.sizes[l], n.sizes[l+1]
		z := n.z[l][:rows*no]
		b := n.biases(l)
		for r := range rows {
			copy(z[r*no:(r+1)*no], b)
		}
		gemm(false, false, rows, no, ni, 1, in[:rows*ni], n.weights(l), 1, z)
		if l == n.layers()-1 {
			return z
		}
		a := n.a[l][:rows*no]
		switch n.act {
		case onnxbuild.Tanh:
			for i, v := range z {
				a[i] = math.Tanh(v)
			}
		default:
			for i, v := range z {
				a[i] = max(0, v)
			}
		}
		in = a
	}
	panic("unreachable")
}

// loss is the mean loss of outputs out (rows×width) against y: softmax
// cross-entropy with y as class indexes, or the squared error summed over
// the outputs. When dz is not nil it receives the gradient of that mean
// with respect to out.
func loss(task Task, out []float64, y []float64, rows, width int, dz []float64) float64 {
	var sum float64
	for r := range rows {
		o := out[r*width : (r+1)*width]
		if task == Classification {
			lse := logSumExp(o)
			c := int(y[r])
			sum += lse - o[c]
			if dz != nil {
				d := dz[r*width : (r+1)*width]
				for j, v := range o {
					d[j] = math.Exp(v-lse) / float64(rows)
				}
				d[c] -= 1 / float64(rows)
			}
			continue
		}
		for j, v := range o {
			e := v - y[r*width+j]
			sum += e * e
			if dz != nil {
				dz[r*width+j] = 2 * e / float64(rows)
			}
		}
	}
	return sum / float64(rows)
}

// logSumExp is log Σ exp(v), computed without overflow for large v.
func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// softmax writes the softmax of v into dst.
func softmax(dst, v []float64) {
	lse := logSumExp(v)
	for i, x := range v {
		dst[i] = math.Exp(x - lse)
	}
}

// lossGrad runs a batch forward and back: it returns the batch's mean loss
// (without the L2 penalty) and leaves in n.grads the gradient of that loss
// plus the penalty l2/2·Σw².
func (n *network) lossGrad(task Task, x, y []float64, rows int, l2 float64) float64 {
	out := n.forward(x, rows)
	last := n.layers() - 1
	width := n.sizes[last+1]
	mean := loss(task, out, y, rows, width, n.dz[last][:rows*width])
	for l := last; l >= 0; l-- {
		ni, no := n.sizes[l], n.sizes[l+1]
		dz := n.dz[l][:rows*no]
		in := x
		if l > 0 {
			in = n.a[l-1]
		}
		in = in[:rows*ni]
		gw, gb := n.weightsOf(n.grads, l), n.biasesOf(n.grads, l)
		gemm(true, false, ni, no, rows, 1, in, dz, 0, gw)
		if l2 > 0 {
			for i, w := range n.weights(l) {
				gw[i] += l2 * w
			}
		}
		clear(gb)
		for r := range rows {
			for j, d := range dz[r*no : (r+1)*no] {
				gb[j] += d
			}
		}
		if l == 0 {
			break
		}
		prev := n.dz[l-1][:rows*ni]
		gemm(false, true, rows, ni, no, 1, dz, n.weights(l), 0, prev)
		switch n.act {
		case onnxbuild.Tanh:
			for i, a := range n.a[l-1][:rows*ni] {
				prev[i] *= 1 - a*a
			}
		default:
			for i, z := range n.z[l-1][:rows*ni] {
				if z <= 0 {
					prev[i] = 0
				}
			}
		}
	}
	return mean
}

// penalty is the L2 term of the loss.
func (n *network) penalty(l2 float64) float64 {
	var s float64
	for l := range n.layers() {
		for _, w := range n.weights(l) {
			s += w * w
		}
	}
	return l2 / 2 * s
}

// adam is the Adam optimiser (Kingma and Ba, 2015) with its usual
// constants.
type adam struct {
	lr   float64
	m, v []float64
	t    int
}

func newAdam(lr float64, n int) *adam {
	return &adam{lr: lr, m: make([]float64, n), v: make([]float64, n)}
}

func (o *adam) step(params, grads []float64) {
	const b1, b2, eps = 0.9, 0.999, 1e-8
	o.t++
	c1 := 1 - math.Pow(b1, float64(o.t))
	c2 := 1 - math.Pow(b2, float64(o.t))
	lr := o.lr * math.Sqrt(c2) / c1
	m, v := o.m[:len(params)], o.v[:len(params)]
	grads = grads[:len(params)]
	for i, g := range grads {
		m[i] = b1*m[i] + (1-b1)*g
		v[i] = b2*v[i] + (1-b2)*g*g
		params[i] -= lr * m[i] / (math.Sqrt(v[i]) + eps)
	}
}
