package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aupd/aupd/internal/testutil"
)

// BenchmarkIngestScriptSideBySide compares Redis's main-thread CPU per
// event of another ingest script with this one, on the same batches
// (benchBatch, 500 events over AUPD_INGEST_ACCOUNTS accounts, 10,000 by
// default), alternating batch by batch so that whatever else the machine
// does weighs on both alike. It reports both figures and their ratio
// (this / other). The other is the function before inline windows
// (testdata/ingest-before-wi.lua: each account's state and window keys
// declared), or AUPD_INGEST_OTHER_SCRIPT, a script run by EVALSHA that
// takes one key per account, as aupd 0.2's did (git show
// v0.2.0:internal/store/ingest.lua).
func BenchmarkIngestScriptSideBySide(b *testing.B) {
	var other runner = newLibrary("aupd_ingest_before_wi", crossingLua, ingestBeforeInline)
	oldPath := os.Getenv("AUPD_INGEST_OTHER_SCRIPT")
	if oldPath != "" {
		oldText, err := os.ReadFile(oldPath)
		if err != nil {
			b.Fatal(err)
		}
		other = newScript(string(oldText))
	}
	scripts := []runner{other, ingestScript}
	accounts := 10000
	if v := os.Getenv("AUPD_INGEST_ACCOUNTS"); v != "" {
		var err error
		if accounts, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	rdb, pa := testutil.Redis(b)
	_, pb := testutil.Redis(b)
	stores := []*Store{New(rdb, pa), New(rdb, pb)}
	ctx := context.Background()
	cpu := func() float64 {
		info := rdb.Info(ctx, "cpu").Val()
		var s float64
		for _, l := range strings.Split(info, "\r\n") {
			for _, f := range []string{"used_cpu_user_main_thread:", "used_cpu_sys_main_thread:"} {
				if v, ok := strings.CutPrefix(l, f); ok {
					x, _ := strconv.ParseFloat(v, 64)
					s += x
				}
			}
		}
		return s
	}
	now := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	var tot [2]float64
	events := 0
	for i := 0; b.Loop(); i++ {
		bs := benchBatch(r, fmt.Sprint("b", i), 500, accounts, now)
		events += 500
		for k := range 2 {
			w := (k + i) % 2
			groups := chunks(len(bs)) // a standalone Redis
			ids := newIDSource(now)
			keys := make([][]string, len(groups))
			args := make([][]any, len(groups))
			for g, idx := range groups {
				args[g] = []any{ms(now), day.Milliseconds(), (5 * time.Minute).Milliseconds(), rebaseAfter(day, 5*time.Minute), len(idx)}
				for _, j := range idx {
					keys[g] = append(keys[g], stores[w].key(bs[j].Account, sufState))
					if w == 0 && oldPath == "" {
						keys[g] = append(keys[g], stores[w].key(bs[j].Account, sufWindow))
					}
					args[g] = append(args[g], packBatch(nil, &bs[j], ids, nil))
				}
				for _, j := range idx {
					if w == 1 { // (this one's windows follow the batches)
						args[g] = append(args[g], stores[w].key(bs[j].Account, sufWindow))
					}
				}
			}
			c0 := cpu()
			cmds, err := stores[w].evalAll(ctx, scripts[w], keys, args, nil)
			tot[w] += cpu() - c0
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range cmds {
				if c.Err() != nil {
					b.Fatal(c.Err())
				}
			}
		}
	}
	b.ReportMetric(tot[0]/float64(events)*1e6, "other-µs/event")
	b.ReportMetric(tot[1]/float64(events)*1e6, "this-µs/event")
	b.ReportMetric(tot[1]/tot[0], "this/other")
}
