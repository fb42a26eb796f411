package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/rules"
)

// IngestAnswer is the answer of the ingest endpoints.
type IngestAnswer struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	Results    []struct {
		ID      string `json:"id"`
		Result  string `json:"result"`
		Account string `json:"account"`
		Reason  string `json:"reason"`
		Detail  string `json:"detail"`
	} `json:"results"`
}

// IngestARF posts one feedback-loop report. The answer is decoded also
// when aupd refused the report (422) or could not store it (503); err is
// then an *Error with that status.
func (c *Client) IngestARF(ctx context.Context, report []byte) (*IngestAnswer, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/v1/ingest/arf", bytes.NewReader(report))
	if err != nil {
		return nil, nil, fmt.Errorf("make request: %w", err)
	}
	req.Header.Set("Content-Type", "message/rfc822")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	var a IngestAnswer
	decoded := json.Unmarshal(data, &a) == nil && a.Results != nil
	if res.StatusCode >= 300 {
		e := &Error{Status: res.StatusCode}
		var wrapper struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &wrapper) == nil {
			e.Code, e.Message = wrapper.Error.Code, wrapper.Error.Message
		}
		if decoded {
			return &a, data, e
		}
		return nil, data, e
	}
	if !decoded {
		return nil, data, fmt.Errorf("decode answer: %s", data)
	}
	return &a, data, nil
}

// ReplayRequest is what a replay tries (GET /api/v1/replay).
type ReplayRequest struct {
	// Threshold is the threshold to try; 0: each account's live one
	// (with a SpamRate only).
	Threshold int
	// SpamRate is the spam-rate rule to try (rate 0: off); nil: each
	// account's live rule.
	SpamRate *rules.SpamRateSetting
	// Volume is a volume limit to try against the volume records (its
	// name is not used; no action: aupd's default, suspend); nil: none.
	Volume  *rules.VolumeLimit
	Company string        // only this company's accounts; "": every account
	Since   time.Duration // the period, ending now; 0: aupd's default (24h)
}

// Replay asks what req's rules, or its volume limit, would have done
// over its period.
func (c *Client) Replay(ctx context.Context, req ReplayRequest) (*apitypes.ReplayReport, []byte, error) {
	q := url.Values{}
	if req.Threshold != 0 {
		q.Set("threshold", strconv.Itoa(req.Threshold))
	}
	if r := req.SpamRate; r != nil {
		q.Set("rate", strconv.FormatFloat(r.Rate, 'g', -1, 64))
		if r.MinSpam != 0 {
			q.Set("min_spam", strconv.Itoa(r.MinSpam))
		}
	}
	if v := req.Volume; v != nil {
		if v.Window != 0 {
			q.Set("volume_window", v.Window.String())
		}
		if v.Messages != 0 {
			q.Set("volume_messages", strconv.Itoa(v.Messages))
		}
		if v.Recipients != 0 {
			q.Set("volume_recipients", strconv.Itoa(v.Recipients))
		}
		if v.Action != "" {
			q.Set("volume_action", string(v.Action))
		}
	}
	if req.Company != "" {
		q.Set("company", req.Company)
	}
	if req.Since > 0 {
		q.Set("since", req.Since.String())
	}
	var r apitypes.ReplayReport
	raw, err := c.do(ctx, http.MethodGet, "/api/v1/replay", q, nil, &r)
	if err != nil {
		return nil, raw, err
	}
	return &r, raw, nil
}
