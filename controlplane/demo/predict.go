package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/shoalfleet/shoal/agent/localclient"
)

// The predictor's seed: the readings it streams.
const streamSeed1, streamSeed2 = 3, 5

// predictor sends a batch of sensor readings to each agent per round,
// through its Open Inference Protocol API, and counts the predictions.
type predictor struct {
	model string
	batch int
	say   func(string, ...any)

	mu      sync.Mutex
	n, rows int // predictions (requests) and the readings in them
	r       *rand.Rand
	shift   float64
	classes []string
}

func newPredictor(model string, batch int, say func(string, ...any)) *predictor {
	return &predictor{model: model, batch: max(batch, 1), say: say, r: rand.New(rand.NewPCG(streamSeed1, streamSeed2)), classes: sensorClasses}
}

func (p *predictor) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *predictor) readings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rows
}

func (p *predictor) setShift(s float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shift = s
}

func (p *predictor) setClasses(c []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.classes = slices.Clone(c)
}

// draw makes the next batch: its readings, row after row, and the
// classes to name the model's labels with.
func (p *predictor) draw() (rows [][]float64, classes []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rows = make([][]float64, p.batch)
	for i := range rows {
		rows[i] = sensorRow(p.r, p.r.IntN(len(sensorMeans)), p.shift)
	}
	return rows, p.classes
}

// round predicts once on each agent, and with verbose prints each
// agent's answer to the batch's first reading. An agent with no model
// active yet is skipped while the fleet is still being rolled out to
// (during), and an error otherwise.
func (p *predictor) round(ctx context.Context, agents []*fleetAgent, verbose, during bool) error {
	for _, a := range agents {
		rows, classes := p.draw()
		x := make([]float32, 0, len(rows)*len(sensorFeatures))
		for _, row := range rows {
			for _, v := range row {
				x = append(x, float32(v))
			}
		}
		req := localclient.InferRequest{Model: p.model, Inputs: []localclient.Tensor{
			localclient.NewTensor("input", []int64{int64(len(rows)), int64(len(sensorFeatures))}, x),
		}}
		resp, err := a.api.Infer(ctx, req)
		if during && localclient.StatusOf(err) == http.StatusServiceUnavailable {
			continue // no model active yet
		}
		if err != nil {
			return fmt.Errorf("predict on %s: %w", a.id, err)
		}
		p.mu.Lock()
		p.n++
		p.rows += len(rows)
		p.mu.Unlock()
		if verbose {
			label, probs, err := firstAnswer(resp, classes)
			if err != nil {
				return fmt.Errorf("predict on %s: %w", a.id, err)
			}
			p.say("  %s (model v%s): [%s] → %-7s p=%s  (+%d more)", a.id, resp.ModelVersion, formatReading(rows[0]), label, formatProbs(probs), len(rows)-1)
		}
	}
	return nil
}

// firstAnswer reads the model's answer to a batch's first row: its label
// (by name, "?" if it names no class) and class probabilities.
func firstAnswer(resp *localclient.InferResponse, classes []string) (string, []float64, error) {
	label := "?"
	if o, ok := resp.Output("label"); ok {
		ls, err := o.Float64s()
		if err != nil {
			return "", nil, err
		}
		if len(ls) > 0 {
			if i := int(ls[0]); float64(i) == ls[0] && i >= 0 && i < len(classes) {
				label = classes[i]
			}
		}
	}
	var probs []float64
	if o, ok := resp.Output("probabilities"); ok {
		ps, err := o.Float64s()
		if err != nil {
			return "", nil, err
		}
		if len(ps) >= len(classes) {
			probs = ps[:len(classes)]
		}
	}
	return label, probs, nil
}

func formatProbs(p []float64) string {
	parts := make([]string, len(p))
	for i, v := range p {
		parts[i] = fmt.Sprintf("%.2f", v)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
