package api

import "github.com/aupd/aupd/internal/auth"

// The authorization model is package auth's; the API names it so.
type (
	AuthConfig  = auth.Config
	TokenConfig = auth.TokenConfig
	Role        = auth.Role
	Permission  = auth.Permission
)

// The roles and the permissions (auth).
const (
	RoleViewer    = auth.RoleViewer
	RoleAbuse     = auth.RoleAbuse
	RoleAdmin     = auth.RoleAdmin
	RolePublisher = auth.RolePublisher

	PermRead        = auth.PermRead
	PermAct         = auth.PermAct
	PermManage      = auth.PermManage
	PermCompanies   = auth.PermCompanies
	PermPublish     = auth.PermPublish
	PermSessionLock = auth.PermSessionLock
	PermControl     = auth.PermControl
)
