package interlock

import "errors"

var ErrSegmentLost = errors.New("segment lost")

func (l *Lock) RenewSegment() error { return errors.New("not yet") }
