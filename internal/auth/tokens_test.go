package auth

import "testing"

func TestTokens(t *testing.T) {
	ts, err := NewTokens(Config{Tokens: []TokenConfig{{Name: "desk", Hash: HashToken("s3cret"), Role: RoleAbuse, Company: "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	if tc, ok := ts.Verify(" s3cret "); !ok || tc.Name != "desk" || tc.Role != RoleAbuse || tc.Company != "acme" || tc.Hash != HashToken("s3cret") {
		t.Fatalf("Verify = %+v, %v", tc, ok)
	}
	if _, ok := ts.Verify("wrong"); ok {
		t.Fatal("a wrong token verified")
	}
	// An invalid config changes nothing.
	if err := ts.Set(Config{Tokens: []TokenConfig{{Name: "x", Hash: "md5:00", Role: RoleAdmin}}}); err == nil {
		t.Fatal("an invalid hash was accepted")
	}
	if _, ok := ts.Named("desk"); !ok {
		t.Fatal("the old tokens were dropped by an invalid config")
	}
	if err := ts.Set(Config{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := ts.Verify("s3cret"); ok {
		t.Fatal("a removed token still verifies")
	}
}
