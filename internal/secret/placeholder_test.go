package secret

import "testing"

func TestPlaceholder(t *testing.T) {
	for s, want := range map[Secret]bool{
		"": false, "change-me": true, "CHANGE-ME-before-use": true, "changeme": true, "secret": true,
		"Password": true, " --- ": true, "s3cr3t-but-real-7f9a2c": false, "xK9#mP2$vL": false,
		"example-dovecot-key-change-me": true, "my-REPLACE_ME-key": true, "exchange-meter-42": false,
	} {
		if got := s.Placeholder(); got != want {
			t.Errorf("%q: %v, want %v", string(s), got, want)
		}
	}
}
