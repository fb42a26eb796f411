package client

import (
	"context"

	"github.com/aupd/aupd/internal/api"
)

// Provision provisions up to api.MaxProvisionBatch accounts.
func (c *Client) Provision(ctx context.Context, req api.ProvisionRequest) (*api.ProvisionResponse, []byte, error) {
	var out api.ProvisionResponse
	raw, err := c.do(ctx, "POST", "/api/v1/provision", nil, req, &out)
	if err != nil {
		return nil, raw, err
	}
	return &out, raw, nil
}
