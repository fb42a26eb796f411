package desk

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aupd/aupd/internal/auth"
	"github.com/aupd/aupd/internal/store"
	"github.com/aupd/aupd/rules"
)

// page files; each is parsed with layout.html.
var pageNames = []string{"overview", "account", "search", "signin", "error", "signin_sent", "signin_link", "sessions"}

func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
		"iso":         func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"join":        strings.Join,
		"path":        url.PathEscape,
		"describe":    describeService,
		"reason":      reasonText,
		"entryReason": reasonOfEntry,
		"badges":      func(a *store.Account) []statusBadge { return badges(a.Status, a.Suspensions) },
	}
}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(templateFuncs()).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("desk templates: %w", err)
		}
		pages[name] = t
	}
	return pages, nil
}

// base is what every page shows: the title, who is signed in (or the
// link in use), the session's CSRF token and a message.
type base struct {
	Title   string
	Who     *session
	CSRF    string
	Flash   string
	Error   string
	Version string
}

func (d *Desk) base(s *session, title string) base {
	b := base{Title: title, Who: s}
	if s != nil {
		b.CSRF = s.csrf
	}
	return b
}

// Role checks for the templates.
func (s *session) CanAct() bool { return s != nil && auth.Allowed(s.role, s.company, auth.PermAct) }

// Name, Role and Company show who is signed in.
func (s *session) Name() string    { return s.name }
func (s *session) Role() string    { return string(s.role) }
func (s *session) Company() string { return s.company }

type errorPage struct {
	base
	Message string
}

func (d *Desk) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := d.pages[name].Execute(&buf, data); err != nil {
		d.log.Error("render desk page", "page", name, "path", logPath(r), "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func describeService(s string) string {
	switch rules.Service(s) {
	case rules.ServiceSend:
		return "sending over SMTP"
	case rules.ServiceWebmailSend:
		return "sending from webmail"
	case rules.ServiceReceive:
		return "receiving mail"
	case rules.ServiceIMAP:
		return "IMAP"
	case rules.ServicePOP3:
		return "POP3"
	case rules.ServiceWebmail:
		return "webmail login"
	}
	return s
}
