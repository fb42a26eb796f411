package client

import (
	"context"

	"github.com/aupd/aupd/internal/api/apitypes"
)

// Provision provisions up to apitypes.MaxProvisionBatch accounts.
func (c *Client) Provision(ctx context.Context, req apitypes.ProvisionRequest) (*apitypes.ProvisionResponse, []byte, error) {
	var out apitypes.ProvisionResponse
	raw, err := c.do(ctx, "POST", "/api/v1/provision", nil, req, &out)
	if err != nil {
		return nil, raw, err
	}
	return &out, raw, nil
}
