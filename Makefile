# dirlockd — see README.md. Every target works from a clean clone.

GO          ?= go
BIN         := bin/dirlockd
# The etcd agent: the only binary that links etcd's client (dirlockd
# starts it for --etcd; internal/lease/agent says why it is separate).
AGENT       := bin/dirlockd-etcd
DEMO_DIR    ?= demo-data
FUZZTIME    ?= 30s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# What dirlockd version prints: the tag, or the commit, +-dirty for a
# modified tree; devel outside a git checkout (a release tarball may set it).
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS     := -X main.version=$(VERSION)

.PHONY: build man install uninstall deb test unit integration bench fuzz torture soak-lease lint lint-vet run clean

# Static (CGO_ENABLED=0): the net package would otherwise link libc and
# runtime/cgo, which adds about a millisecond to every start and check.
build:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/dirlockd
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(AGENT) ./cmd/dirlockd-etcd

# The man pages, from the help texts and flag sets of the commands (the
# generator is built only with -tags manpages). They are committed, so that
# install needs no Go and a review shows what a change does to them;
# integration/install_test.go fails when they are not what this generates.
man:
	$(GO) run -tags manpages ./cmd/dirlockd __man man

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, its etcd agent
# in libexec, the man pages,
# the completions where bash-completion, zsh and fish look for them, the
# systemd unit template (ExecStart names the installed binary) and its
# drop-in examples. Completions come from the binary just built.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
# dirlockd finds the agent at ../libexec/dirlockd/ from its own directory:
# LIBEXECDIR must stay that, relative to BINDIR.
LIBEXECDIR  ?= $(PREFIX)/libexec/dirlockd
SHAREDIR    ?= $(PREFIX)/share
MANDIR      ?= $(SHAREDIR)/man
DOCDIR      ?= $(SHAREDIR)/doc/dirlockd
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(SHAREDIR)/bash-completion/completions
ZSHCOMPDIR  ?= $(SHAREDIR)/zsh/site-functions
FISHCOMPDIR ?= $(SHAREDIR)/fish/vendor_completions.d
MANPAGES    := $(wildcard man/*.1)
EXAMPLES    := $(wildcard systemd/examples/*.conf)

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/systemd \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/dirlockd
	install -m 0755 $(AGENT) $(DESTDIR)$(LIBEXECDIR)/dirlockd-etcd
	install -m 0644 $(MANPAGES) $(DESTDIR)$(MANDIR)/man1/
	$(BIN) completion bash > $(DESTDIR)$(BASHCOMPDIR)/dirlockd
	$(BIN) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_dirlockd
	$(BIN) completion fish > $(DESTDIR)$(FISHCOMPDIR)/dirlockd.fish
	sed 's|@bindir@|$(BINDIR)|g; s|@docdir@|$(DOCDIR)|g' systemd/dirlockd@.service.in > $(DESTDIR)$(UNITDIR)/dirlockd@.service
	install -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/systemd/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dirlockd $(DESTDIR)$(LIBEXECDIR)/dirlockd-etcd $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MANPAGES))) \
		$(DESTDIR)$(BASHCOMPDIR)/dirlockd $(DESTDIR)$(ZSHCOMPDIR)/_dirlockd $(DESTDIR)$(FISHCOMPDIR)/dirlockd.fish \
		$(DESTDIR)$(UNITDIR)/dirlockd@.service $(addprefix $(DESTDIR)$(DOCDIR)/systemd/,$(notdir $(EXAMPLES)))
	rmdir $(DESTDIR)$(DOCDIR)/systemd $(DESTDIR)$(DOCDIR) $(DESTDIR)$(LIBEXECDIR) 2>/dev/null || true

# make deb: bin/dirlockd_VERSION_ARCH.deb (DEBDIR=), what make install puts
# under /usr, man pages compressed as Debian does; dpkg-deb, no network. The
# binary is static: no Depends. Without a tag, the version is 0~COMMIT, so
# that the first tagged release sorts above it.
DEBDIR      ?= bin
DEB_VERSION ?= $(shell v='$(VERSION)'; case $$v in (v[0-9]*.*) v=$${v#v};; ([0-9]*.*) ;; (*) v=0~$$v;; esac; echo "$$v" | tr - +)
DEB_ARCH    ?= $(shell dpkg --print-architecture)
DEB         := $(DEBDIR)/dirlockd_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_ROOT    := $(DEBDIR)/deb-root

deb:
	rm -rf $(DEB_ROOT)
	$(MAKE) install DESTDIR=$(abspath $(DEB_ROOT)) PREFIX=/usr
	gzip -9n $(DEB_ROOT)/usr/share/man/man1/*.1
	install -d $(DEB_ROOT)/DEBIAN
	{ echo "Package: dirlockd"; \
	  echo "Version: $(DEB_VERSION)"; \
	  echo "Architecture: $(DEB_ARCH)"; \
	  echo "Maintainer: dirlockd developers <dirlockd@users.noreply.github.com>"; \
	  echo "Installed-Size: $$(du -sk --exclude=DEBIAN $(DEB_ROOT) | cut -f1)"; \
	  echo "Section: admin"; \
	  echo "Priority: optional"; \
	  echo "Homepage: https://github.com/dirlockd/dirlockd"; \
	  echo "Description: one server process tree per data directory"; \
	  echo " dirlockd wraps a server (a database, a queue) so that exactly one"; \
	  echo " process tree ever works in its data directory: a kernel lock on a"; \
	  echo " pidfile plus a System V shared-memory witness of orphaned children."; \
	  echo " With --etcd, an etcd lease guards the directory across hosts too"; \
	  echo " (the etcd client is a separate program, /usr/libexec/dirlockd/dirlockd-etcd)."; \
	  echo " Man pages, shell completions and a systemd unit template included."; \
	} > $(DEB_ROOT)/DEBIAN/control
	dpkg-deb --root-owner-group --build $(DEB_ROOT) $(DEB)
	rm -rf $(DEB_ROOT)

# Packages run one at a time (-p 1): each checks in TestMain that the set of
# SysV segments on the machine is the same after its tests as before, which
# only holds when no other package's tests run beside it.
test: lint-vet
	$(GO) test -p 1 -count=1 -timeout 25m ./...

unit: lint-vet
	$(GO) test -p 1 -count=1 ./pidfile/ ./shm/ ./interlock/ ./internal/...

integration: lint-vet
	$(GO) test -p 1 -count=1 -timeout 25m ./integration/

# In-process benchmarks, then the CLI benchmark: whole dirlockd processes
# against flock(1) (util-linux; apt-get install util-linux), interleaved,
# warm, cold and with BENCH_PROCS more idle processes, then the hand-off
# rate of dirlockd stress beside a bare flock loop. Not run by .ci/run.
BENCH_PROCS ?= 3000
bench: build
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count 5 ./interlock/
	@command -v flock >/dev/null || { echo "make bench needs flock(1): apt-get install util-linux"; exit 1; }
	-$(GO) run ./integration/clibench -bin $(BIN) -procs $(BENCH_PROCS)
	$(GO) run ./integration/clibench -bin $(BIN) -handoff 10s

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pidfile/
	$(GO) test -run '^$$' -fuzz '^FuzzArgs$$' -fuzztime $(FUZZTIME) ./cmd/dirlockd/

# The reliability suite at soak scale (make test runs it at CI scale), then
# the fuzzers; the table goes to docs/reliability.md. Scale with
# TORTURE_ITER, TORTURE_CONC, TORTURE_HOLD; replay with TORTURE_SEED.
TORTURE_ITER ?= 200
TORTURE_CONC ?= 64
TORTURE_HOLD ?= 1ms
TORTURE_SEED ?=
torture:
	DIRLOCKD_TORTURE_ITER=$(TORTURE_ITER) DIRLOCKD_TORTURE_CONC=$(TORTURE_CONC) \
	DIRLOCKD_TORTURE_HOLD=$(TORTURE_HOLD) DIRLOCKD_TORTURE_SEED=$(TORTURE_SEED) \
	DIRLOCKD_TORTURE_REPORT=$(CURDIR)/docs/reliability.md \
	DIRLOCKD_TORTURE_COMMAND="make torture TORTURE_ITER=$(TORTURE_ITER) TORTURE_CONC=$(TORTURE_CONC)" \
	$(GO) test -count=1 -timeout 6h -run '^TestTorture$$' -v ./integration/
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# The etcd lease under network partitions at soak scale (make test runs the
# missed-takeover case on every etcd version and the other faults once):
# every fault of integration/partition_test.go on Debian's etcd 3.4 and
# etcd 3.5 and 3.6 built from the module proxy, until SOAK_EVENTS fault
# events; the verdict and figures go to docs/reliability.md. Needs root,
# ip(8) and nft(8); about 20 s a round.
# SOAK_FOR=1h stops it after that long, short of SOAK_EVENTS (the report
# says so).
SOAK_EVENTS ?= 1000
SOAK_FOR    ?=
soak-lease: build
	DIRLOCKD_SOAK_EVENTS=$(SOAK_EVENTS) DIRLOCKD_SOAK_FOR=$(SOAK_FOR) DIRLOCKD_SOAK_REPORT=$(CURDIR)/docs/reliability.md \
	unshare --ipc -- $(GO) test -tags soak -count=1 -timeout 24h -run '^TestLeaseSoak$$' -v ./integration/

lint-vet:
	$(GO) vet ./...
	$(GO) vet -tags soak ./integration
	$(GO) vet -tags manpages ./cmd/dirlockd

lint: lint-vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags manpages ./cmd/dirlockd
	$(GO) run $(STATICCHECK) -tags soak ./integration

# Run a demo server (sleep) under the interlock of ./demo-data until Ctrl-C.
# From another terminal: bin/dirlockd status -D demo-data
run: build
	install -d -m 0700 $(DEMO_DIR)
	$(BIN) run -D $(DEMO_DIR) -- sleep infinity

clean:
	rm -rf bin $(DEMO_DIR)
