package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/rules"
)

// importBatch is how many accounts one request provisions.
const importBatch = 200

// importCommand is "aupctl import FILE --reason TEXT": it provisions the
// accounts of a CSV file (address[,type[,company]], an optional header
// line) or of JSON lines ({"address":...,"type":...,"company":...}), from
// FILE or standard input ("-"). It is idempotent, and reports what changed.
func importCommand() command {
	return command{group: "account", args: "FILE|- --reason TEXT", minArgs: 1, maxArgs: 1, flags: withReason, run: importCmd,
		summary: "provision the accounts of a CSV or JSON-lines file (idempotent, with a report)",
		help: "FILE (or - for standard input) holds address[,type[,company]] lines with an optional header, or JSON lines " +
			`{"address":...,"type":...,"company":...}. Each account becomes (or stays) a provisioned mailbox or forward; ` +
			"the report says per account whether it was created, updated, left unchanged or refused."}
}

func importCmd(ctx context.Context, x *cli, args []string, f *flags) error {
	if err := needReason(f); err != nil {
		return err
	}
	in := x.stdin
	if args[0] != "-" {
		fh, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer fh.Close()
		in = fh
	}
	items, err := readImport(in)
	if err != nil {
		return &usageError{args[0] + ": " + err.Error()}
	}
	if len(items) == 0 {
		return &usageError{args[0] + ": no accounts"}
	}
	var total apitypes.ProvisionResponse
	for start := 0; start < len(items); start += importBatch {
		batch := items[start:min(start+importBatch, len(items))]
		res, _, err := x.c.Provision(ctx, apitypes.ProvisionRequest{Accounts: batch, ChangeRequest: apitypes.ChangeRequest{Reason: *f.reason}})
		if err != nil {
			// What was sent before stays provisioned; running the import
			// again is safe.
			return fmt.Errorf("accounts %d to %d: %w", start+1, start+len(batch), err)
		}
		total.Created += res.Created
		total.Updated += res.Updated
		total.Unchanged += res.Unchanged
		total.Failed += res.Failed
		total.Results = append(total.Results, res.Results...)
	}
	if x.json {
		b, _ := json.MarshalIndent(total, "", "  ")
		x.printRaw(b)
	} else {
		for _, r := range total.Results {
			switch r.Result {
			case "created", "updated":
				fmt.Fprintf(x.stdout, "%s: %s\n", r.Address, r.Result)
			case "unchanged":
			default:
				fmt.Fprintf(x.stdout, "%s: error: %s\n", r.Address, r.Error)
			}
		}
		fmt.Fprintf(x.stdout, "%d created, %d updated, %d unchanged, %d failed\n", total.Created, total.Updated, total.Unchanged, total.Failed)
	}
	if total.Failed > 0 {
		return fmt.Errorf("%d of %d accounts failed", total.Failed, len(items))
	}
	return nil
}

// readImport reads accounts as JSON lines when the first non-blank byte is
// "{", else as CSV.
func readImport(r io.Reader) ([]apitypes.ProvisionItem, error) {
	br := bufio.NewReader(io.LimitReader(r, 256<<20))
	for {
		b, err := br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			return nil, err
		}
		if b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n' || b[0] == 0xEF || b[0] == 0xBB || b[0] == 0xBF {
			_, _ = br.ReadByte() // blanks and a UTF-8 BOM
			continue
		}
		if b[0] == '{' {
			return readJSONLines(br)
		}
		return readCSV(br)
	}
}

func readJSONLines(r *bufio.Reader) ([]apitypes.ProvisionItem, error) {
	var items []apitypes.ProvisionItem
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var it apitypes.ProvisionItem
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&it); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if it.Address == "" {
			return nil, fmt.Errorf("line %d: no address", n)
		}
		items = append(items, it)
	}
	return items, sc.Err()
}

func readCSV(r io.Reader) ([]apitypes.ProvisionItem, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	var items []apitypes.ProvisionItem
	for n := 1; ; n++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return items, nil
		}
		if err != nil {
			return nil, err
		}
		if len(rec) > 3 {
			return nil, fmt.Errorf("line %d: %d fields; want address[,type[,company]]", n, len(rec))
		}
		if n == 1 && strings.EqualFold(strings.TrimSpace(rec[0]), "address") {
			continue // header
		}
		it := apitypes.ProvisionItem{Address: strings.TrimSpace(rec[0])}
		if len(rec) > 1 {
			it.Type = rules.AccountType(strings.TrimSpace(rec[1]))
		}
		if len(rec) > 2 {
			it.Company = strings.TrimSpace(rec[2])
		}
		if it.Address == "" {
			return nil, fmt.Errorf("line %d: no address", n)
		}
		items = append(items, it)
	}
}
