# dirlockd — see README.md. Every target works from a clean clone.

GO          ?= go
BIN         := bin/dirlockd
DEMO_DIR    ?= demo-data
FUZZTIME    ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test unit integration bench fuzz lint lint-vet run clean

build:
	$(GO) build -o $(BIN) ./cmd/dirlockd

# Packages run one at a time (-p 1): each checks in TestMain that the set of
# SysV segments on the machine is the same after its tests as before, which
# only holds when no other package's tests run beside it.
test: lint-vet
	$(GO) test -p 1 -count=1 ./...

unit: lint-vet
	$(GO) test -p 1 -count=1 ./pidfile/ ./shm/ ./interlock/ ./internal/...

integration: lint-vet
	$(GO) test -p 1 -count=1 ./integration/

bench:
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count 5 ./interlock/

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pidfile/

lint-vet:
	$(GO) vet ./...

lint: lint-vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...

# Run a demo server (sleep) under the interlock of ./demo-data until Ctrl-C.
# From another terminal: bin/dirlockd status -D demo-data
run: build
	install -d -m 0700 $(DEMO_DIR)
	$(BIN) run -D $(DEMO_DIR) -- sleep infinity

clean:
	rm -rf bin $(DEMO_DIR)
