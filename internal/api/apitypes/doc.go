// Package apitypes holds the wire types of aupd's admin API: the JSON
// bodies the server (internal/api) answers and reads, and the Go client
// (internal/client, aupctl) sends and decodes. It imports only the
// standard library and aupd's pure packages (rules, events), so that a
// client of the API links neither the server nor Redis nor NATS.
//
// Some types are also the records the store keeps (HistoryEntry,
// Suspension, StatusInfo, Counts, Sender, Login, Licences): the store
// names them by alias, so that what it keeps and what the API shows are
// one definition.
package apitypes
