// Package client is a small client of aupd's admin API (internal/api), used
// by aupctl. Every method returns the decoded answer and its raw JSON, so
// that callers can print either.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aupd/aupd/internal/api/apitypes"
	"github.com/aupd/aupd/rules"
)

// Client talks to one aupd.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the aupd at base (for example
// http://127.0.0.1:9390) authenticating with token. hc nil: a default
// client.
func New(base, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want http://host:port or https://host:port", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}, nil
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("server answered %d", e.Status)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// StatusOf returns the HTTP status of an API error, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// do sends a request and decodes a JSON answer into out (unless nil). It
// returns the raw body.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) ([]byte, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("make request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if res.StatusCode >= 300 {
		e := &Error{Status: res.StatusCode}
		var wrapper struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &wrapper) == nil {
			e.Code, e.Message = wrapper.Error.Code, wrapper.Error.Message
		}
		return data, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return data, fmt.Errorf("decode answer: %w", err)
		}
	}
	return data, nil
}

func accountPath(addr string, rest ...string) string {
	p := "/api/v1/accounts/" + url.PathEscape(addr)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Account reads one account.
func (c *Client) Account(ctx context.Context, addr string) (*apitypes.Account, []byte, error) {
	var a apitypes.Account
	raw, err := c.do(ctx, "GET", accountPath(addr), nil, nil, &a)
	return &a, raw, err
}

// SetStatus runs a status action: lock, unlock, end-lockout, maintenance,
// close or activate.
func (c *Client) SetStatus(ctx context.Context, addr, action, reason string) (*apitypes.ChangeResponse, []byte, error) {
	var cr apitypes.ChangeResponse
	raw, err := c.do(ctx, "POST", accountPath(addr, action), nil, apitypes.ChangeRequest{Reason: reason}, &cr)
	return &cr, raw, err
}

// Suspend suspends services.
func (c *Client) Suspend(ctx context.Context, addr string, services []rules.Service, reason string) (*apitypes.ChangeResponse, []byte, error) {
	var cr apitypes.ChangeResponse
	raw, err := c.do(ctx, "POST", accountPath(addr, "suspend"), nil, apitypes.SuspendRequest{Services: services, ChangeRequest: apitypes.ChangeRequest{Reason: reason}}, &cr)
	return &cr, raw, err
}

// Reinstate lifts suspensions (none: all).
func (c *Client) Reinstate(ctx context.Context, addr string, services []rules.Service, reason string) (*apitypes.ChangeResponse, []byte, error) {
	var cr apitypes.ChangeResponse
	raw, err := c.do(ctx, "POST", accountPath(addr, "reinstate"), nil, apitypes.ReinstateRequest{Services: services, ChangeRequest: apitypes.ChangeRequest{Reason: reason}}, &cr)
	return &cr, raw, err
}

// SetAccount creates an account or sets its type or company.
func (c *Client) SetAccount(ctx context.Context, addr string, typ rules.AccountType, company, reason string) (*apitypes.ChangeResponse, []byte, error) {
	var cr apitypes.ChangeResponse
	raw, err := c.do(ctx, "PUT", accountPath(addr), nil, apitypes.AccountRequest{Type: typ, Company: company, ChangeRequest: apitypes.ChangeRequest{Reason: reason}}, &cr)
	return &cr, raw, err
}

// Delete deletes an account.
func (c *Client) Delete(ctx context.Context, addr, reason string) ([]byte, error) {
	return c.do(ctx, "DELETE", accountPath(addr), nil, apitypes.ChangeRequest{Reason: reason}, nil)
}

// Note adds a case note to an account's history.
func (c *Client) Note(ctx context.Context, addr, text string) (*apitypes.NoteResponse, []byte, error) {
	var nr apitypes.NoteResponse
	raw, err := c.do(ctx, "POST", accountPath(addr, "notes"), nil, apitypes.NoteRequest{Text: text}, &nr)
	return &nr, raw, err
}

// History reads a page of an account's history.
func (c *Client) History(ctx context.Context, addr string, offset, limit int) (*apitypes.HistoryPage, []byte, error) {
	var h apitypes.HistoryPage
	q := url.Values{"offset": {strconv.Itoa(offset)}, "limit": {strconv.Itoa(limit)}}
	raw, err := c.do(ctx, "GET", accountPath(addr, "history"), q, nil, &h)
	return &h, raw, err
}

// Evidence downloads the evidence.txt of a suspension.
func (c *Client) Evidence(ctx context.Context, addr, id string) ([]byte, error) {
	return c.do(ctx, "GET", accountPath(addr, "suspensions", url.PathEscape(id), "evidence.txt"), nil, nil, nil)
}

// ListQuery selects accounts.
type ListQuery struct {
	Company   string
	Status    string
	Suspended bool
	Cursor    string
	Limit     int
}

// List reads a page of accounts.
func (c *Client) List(ctx context.Context, lq ListQuery) (*apitypes.AccountList, []byte, error) {
	q := url.Values{}
	if lq.Company != "" {
		q.Set("company", lq.Company)
	}
	if lq.Status != "" {
		q.Set("status", lq.Status)
	}
	if lq.Suspended {
		q.Set("suspended", "true")
	}
	if lq.Cursor != "" {
		q.Set("cursor", lq.Cursor)
	}
	if lq.Limit > 0 {
		q.Set("limit", strconv.Itoa(lq.Limit))
	}
	var l apitypes.AccountList
	raw, err := c.do(ctx, "GET", "/api/v1/accounts", q, nil, &l)
	return &l, raw, err
}

// Licences counts a company's licences.
func (c *Client) Licences(ctx context.Context, company string) (*apitypes.Licences, []byte, error) {
	var l apitypes.Licences
	raw, err := c.do(ctx, "GET", "/api/v1/companies/"+url.PathEscape(company)+"/licences", nil, nil, &l)
	return &l, raw, err
}

// Companies reads a page of companies.
func (c *Client) Companies(ctx context.Context, cursor string, limit int) (*apitypes.CompanyList, []byte, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var l apitypes.CompanyList
	raw, err := c.do(ctx, "GET", "/api/v1/companies", q, nil, &l)
	return &l, raw, err
}

// Company reads one company.
func (c *Client) Company(ctx context.Context, id string) (*apitypes.Company, []byte, error) {
	var co apitypes.Company
	raw, err := c.do(ctx, "GET", "/api/v1/companies/"+url.PathEscape(id), nil, nil, &co)
	return &co, raw, err
}

// Decide asks for an access decision.
func (c *Client) Decide(ctx context.Context, addr string, access rules.Access) (*apitypes.DecideResponse, []byte, error) {
	var d apitypes.DecideResponse
	raw, err := c.do(ctx, "POST", "/api/v1/decide", nil, apitypes.DecideRequest{Account: addr, Access: access}, &d)
	return &d, raw, err
}
