package notifier

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// FailedCount counts the notices that failed permanently since a time
// (one Redis command, for the aupd_notices_failed gauge).
func (s *Store) FailedCount(ctx context.Context, since time.Time) (int64, error) {
	n, err := s.rdb.ZCount(ctx, s.failedKey(), strconv.FormatInt(since.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("count failed notices: %w", err)
	}
	return n, nil
}

// TrimFailed drops entries of the failed index older than before (the
// retention job; the notices themselves expire on their own).
func (s *Store) TrimFailed(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.rdb.ZRemRangeByScore(ctx, s.failedKey(), "-inf", "("+strconv.FormatInt(before.UnixMilli(), 10)).Result()
	if err != nil {
		return 0, fmt.Errorf("trim failed notices: %w", err)
	}
	return n, nil
}
