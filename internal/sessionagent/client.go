package sessionagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors of the lock API, as the agent tells them apart.
var (
	// errInUse: aupd refused the lock (409): the mailbox is held in a
	// conflicting mode, or has too many shared holders.
	errInUse = errors.New("mailbox in use")
	// errNotHeld: the lock to renew is gone (404); acquire again.
	errNotHeld = errors.New("lock not held")
)

// lockAPI is a client of aupd's session-lock API (docs/api.md). It keeps
// its connections alive between requests.
type lockAPI struct {
	base   string // aupd's URL, no trailing slash
	token  string
	lease  int64 // seconds
	holder string
	hc     *http.Client
}

func newLockAPI(cfg Config, token string) *lockAPI {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.IdleConnTimeout = 5 * time.Minute
	return &lockAPI{
		base:   strings.TrimRight(cfg.URL, "/"),
		token:  token,
		lease:  int64(cfg.Lease / time.Second),
		holder: cfg.Holder,
		hc:     &http.Client{Transport: tr, Timeout: cfg.RequestTimeout},
	}
}

func (c *lockAPI) locksURL(account string) string {
	return c.base + "/api/v1/accounts/" + url.PathEscape(account) + "/session-locks"
}

// do sends one request and returns the status and up to 4 KiB of body.
func (c *lockAPI) do(ctx context.Context, method, u string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	// Drain what is left so that the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, err
}

// acquire takes a lock of protocol on account's mailbox and returns its id.
func (c *lockAPI) acquire(ctx context.Context, account, protocol, from string) (string, error) {
	body, _ := json.Marshal(map[string]any{"protocol": protocol, "lease_seconds": c.lease,
		"holder": "dovecot " + protocol + " on " + c.holder + " from " + from})
	code, b, err := c.do(ctx, http.MethodPost, c.locksURL(account), body)
	if err != nil {
		return "", fmt.Errorf("acquire: %w", err)
	}
	switch code {
	case http.StatusCreated:
		var lk struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &lk); err != nil || lk.ID == "" {
			return "", fmt.Errorf("acquire: no lock id in aupd's answer %q", b)
		}
		return lk.ID, nil
	case http.StatusConflict:
		return "", errInUse
	}
	return "", fmt.Errorf("acquire: aupd answered %d: %s", code, bytes.TrimSpace(b))
}

// renew extends the lease of lock id.
func (c *lockAPI) renew(ctx context.Context, account, id string) error {
	body := []byte(fmt.Sprintf(`{"lease_seconds":%d}`, c.lease))
	code, b, err := c.do(ctx, http.MethodPost, c.locksURL(account)+"/"+url.PathEscape(id)+"/renew", body)
	switch {
	case err != nil:
		return fmt.Errorf("renew: %w", err)
	case code == http.StatusOK:
		return nil
	case code == http.StatusNotFound:
		return errNotHeld
	}
	return fmt.Errorf("renew: aupd answered %d: %s", code, bytes.TrimSpace(b))
}

// release gives lock id up; a lock that is gone is released too.
func (c *lockAPI) release(ctx context.Context, account, id string) error {
	code, b, err := c.do(ctx, http.MethodDelete, c.locksURL(account)+"/"+url.PathEscape(id), nil)
	switch {
	case err != nil:
		return fmt.Errorf("release: %w", err)
	case code == http.StatusNoContent || code == http.StatusOK:
		return nil
	}
	return fmt.Errorf("release: aupd answered %d: %s", code, bytes.TrimSpace(b))
}

func (c *lockAPI) close() { c.hc.CloseIdleConnections() }
