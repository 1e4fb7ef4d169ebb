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
# STRIP=-s -w leaves out the symbol table and DWARF (make deb: Debian
# ships stripped binaries; a Go panic's trace needs neither).
STRIP       ?=
LDFLAGS     := -X main.version=$(VERSION) $(STRIP)
# Reproducible: no build paths (-trimpath), no VCS stamp beyond VERSION
# (-buildvcs=false): two builds of one commit with one toolchain are the
# same bytes (TestDeb checks).
GOBUILD     := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)"

.PHONY: build man install uninstall deb deps test unit integration bench fuzz torture soak-lease lint lint-vet run clean

# Static (CGO_ENABLED=0): the net package would otherwise link libc and
# runtime/cgo, which adds about a millisecond to every start and check.
build:
	$(GOBUILD) -o $(BIN) ./cmd/dirlockd
	$(GOBUILD) -o $(AGENT) ./cmd/dirlockd-etcd

# What the tests need beyond Go (.ci/deps lists it, for .ci/run too): as
# root, installed when missing; otherwise make stops at once with the
# apt-get line to run. Nothing is run when all is present.
deps:
	@if [ "$$(id -u)" = 0 ]; then .ci/deps install; else .ci/deps check; fi

# The man pages, from the help texts and flag sets of the commands (the
# generator is built only with -tags manpages). They are committed, so that
# install needs no Go and a review shows what a change does to them;
# integration/install_test.go fails when they are not what this generates.
man:
	$(GO) run -tags manpages ./cmd/dirlockd __man man

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, its etcd agent
# in libexec, the man pages, README.md and docs/*.md in DOCDIR (--help
# points there),
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
DOCS        := README.md $(wildcard docs/*.md)

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
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/dirlockd $(DESTDIR)$(LIBEXECDIR)/dirlockd-etcd $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MANPAGES))) \
		$(DESTDIR)$(BASHCOMPDIR)/dirlockd $(DESTDIR)$(ZSHCOMPDIR)/_dirlockd $(DESTDIR)$(FISHCOMPDIR)/dirlockd.fish \
		$(DESTDIR)$(UNITDIR)/dirlockd@.service $(addprefix $(DESTDIR)$(DOCDIR)/systemd/,$(notdir $(EXAMPLES))) \
		$(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	rmdir $(DESTDIR)$(DOCDIR)/systemd $(DESTDIR)$(DOCDIR) $(DESTDIR)$(LIBEXECDIR) 2>/dev/null || true

# make deb: two packages in DEBDIR, built with dpkg-deb (no network, no
# debhelper): dirlockd (what make install puts under /usr, but the agent)
# and dirlockd-etcd (the etcd agent, 2/3 of the bytes, which only run --etcd
# needs; dirlockd Suggests it). Each carries what Debian policy asks: the
# DEP-5 copyright, changelog.Debian.gz, man pages and docs over 4 kB
# compressed with gzip -9n, files root-owned 0644/0755, and its lintian
# overrides (debian/*.lintian-overrides say why). The binaries are static:
# no Depends but dirlockd-etcd's on dirlockd. Reproducible: file times and
# the changelog's date are the commit's (SOURCE_DATE_EPOCH). Without a tag,
# the version is 0~COMMIT, so that the first tagged release sorts above it;
# -1 is the Debian revision (the packaging is not native: debian/ may
# change without a new dirlockd).
DEBDIR      ?= bin
DEB_VERSION ?= $(shell v='$(VERSION)'; case $$v in (v[0-9]*.*) v=$${v#v};; ([0-9]*.*) ;; (*) v=0~$$v;; esac; echo "$$v" | tr - +)-1
DEB_ARCH    ?= $(shell dpkg --print-architecture)
DEB_ROOT    := $(DEBDIR)/deb-root
DEB_EPOCH   ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DEB_MAINT   := dirlockd developers <dirlockd@users.noreply.github.com>

deb:
	rm -rf $(DEB_ROOT)
	$(MAKE) install DESTDIR=$(abspath $(DEB_ROOT))/dirlockd PREFIX=/usr STRIP="-s -w"
	install -d $(DEB_ROOT)/dirlockd-etcd/usr
	mv $(DEB_ROOT)/dirlockd/usr/libexec $(DEB_ROOT)/dirlockd-etcd/usr/
	gzip -9n $(DEB_ROOT)/dirlockd/usr/share/man/man1/*.1
	find $(DEB_ROOT)/dirlockd/usr/share/doc/dirlockd -name '*.md' -size +4k -exec gzip -9n {} +
	{ echo "dirlockd ($(DEB_VERSION)) unstable; urgency=medium"; echo; \
	  echo "  * Built from dirlockd $(VERSION) by make deb; the project's history is"; \
	  echo "    its git log."; echo; \
	  echo " -- $(DEB_MAINT)  $$(LC_ALL=C date -u -R -d @$(DEB_EPOCH))"; \
	} > $(DEB_ROOT)/changelog.Debian
	set -e; for p in dirlockd dirlockd-etcd; do \
	  r=$(DEB_ROOT)/$$p; \
	  install -d $$r/DEBIAN $$r/usr/share/doc/$$p $$r/usr/share/lintian/overrides; \
	  install -m 0644 debian/copyright $$r/usr/share/doc/$$p/copyright; \
	  gzip -9nc $(DEB_ROOT)/changelog.Debian > $$r/usr/share/doc/$$p/changelog.Debian.gz; \
	  sed '/^#/d' debian/$$p.lintian-overrides > $$r/usr/share/lintian/overrides/$$p; \
	  chmod 0644 $$r/usr/share/doc/$$p/changelog.Debian.gz $$r/usr/share/lintian/overrides/$$p; \
	  { echo "Package: $$p"; \
	    echo "Version: $(DEB_VERSION)"; \
	    echo "Architecture: $(DEB_ARCH)"; \
	    echo "Maintainer: $(DEB_MAINT)"; \
	    echo "Installed-Size: $$(du -sk --exclude=DEBIAN $$r | cut -f1)"; \
	    sed -n "/^Package: $$p$$/,/^$$/{/^Package:/d;/^$$/d;s/@VERSION@/$(DEB_VERSION)/;p}" debian/control; \
	  } > $$r/DEBIAN/control; \
	  (cd $$r && find usr -type f -exec md5sum {} + | LC_ALL=C sort -k 2) > $$r/DEBIAN/md5sums; \
	  chmod 0644 $$r/DEBIAN/md5sums $$r/DEBIAN/control; \
	  find $$r -exec touch -h -d @$(DEB_EPOCH) {} +; \
	  SOURCE_DATE_EPOCH=$(DEB_EPOCH) dpkg-deb --root-owner-group -Zxz --build $$r $(DEBDIR)/$${p}_$(DEB_VERSION)_$(DEB_ARCH).deb; \
	done
	rm -rf $(DEB_ROOT)

# Packages run one at a time (-p 1): each checks in TestMain that the set of
# SysV segments on the machine is the same after its tests as before, which
# only holds when no other package's tests run beside it.
test: deps lint-vet
	$(GO) test -p 1 -count=1 -timeout 25m ./...

unit: lint-vet
	$(GO) test -p 1 -count=1 ./pidfile/ ./shm/ ./interlock/ ./internal/...

integration: deps lint-vet
	$(GO) test -p 1 -count=1 -timeout 25m ./integration/

# In-process benchmarks, then the CLI benchmark: whole dirlockd processes
# against flock(1) (util-linux; apt-get install util-linux), interleaved,
# warm, cold and with BENCH_PROCS more idle processes, then the hand-off
# rate of dirlockd stress beside a bare flock loop. Not run by .ci/run.
BENCH_PROCS ?= 3000
bench: deps build
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -count 5 ./interlock/
	-$(GO) run ./integration/clibench -bin $(BIN) -procs $(BENCH_PROCS)
	$(GO) run ./integration/clibench -bin $(BIN) -handoff 10s

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./pidfile/
	$(GO) test -run '^$$' -fuzz '^FuzzArgs$$' -fuzztime $(FUZZTIME) ./cmd/dirlockd/
	$(GO) test -run '^$$' -fuzz '^FuzzMainPID$$' -fuzztime $(FUZZTIME) ./internal/supervise/
	$(GO) test -run '^$$' -fuzz '^FuzzString$$' -fuzztime $(FUZZTIME) ./internal/printable/

# The reliability suite at soak scale (make test runs it at CI scale), then
# the fuzzers; the table goes to docs/reliability.md. Scale with
# TORTURE_ITER, TORTURE_CONC, TORTURE_HOLD; replay with TORTURE_SEED.
TORTURE_ITER ?= 200
TORTURE_CONC ?= 64
TORTURE_HOLD ?= 1ms
TORTURE_SEED ?=
torture: deps
	DIRLOCKD_TORTURE_ITER=$(TORTURE_ITER) DIRLOCKD_TORTURE_CONC=$(TORTURE_CONC) \
	DIRLOCKD_TORTURE_HOLD=$(TORTURE_HOLD) DIRLOCKD_TORTURE_SEED=$(TORTURE_SEED) \
	DIRLOCKD_TORTURE_REPORT=$(CURDIR)/docs/reliability.md \
	DIRLOCKD_TORTURE_COMMAND="make torture TORTURE_ITER=$(TORTURE_ITER) TORTURE_CONC=$(TORTURE_CONC)" \
	$(GO) test -count=1 -timeout 6h -run '^TestTorture$$' -v ./integration/
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

# The etcd lease under network partitions at soak scale (make test runs the
# missed-takeover case on every etcd version and the other faults once):
# every fault of integration/partition_test.go on Debian's etcd 3.4 and
# etcd 3.5 and 3.6 built from the module proxy, the three at once, until
# SOAK_EVENTS fault events in all; the verdict and figures go to
# docs/reliability.md. Needs root, ip(8), nft(8) and a loop device; about
# 20 s a round, 1000 events in about 35 minutes (33 in the last run).
# SOAK_FOR=1h stops it after that long, short of SOAK_EVENTS (the report
# says so).
SOAK_EVENTS ?= 1000
SOAK_FOR    ?=
soak-lease: deps build
	DIRLOCKD_SOAK_EVENTS=$(SOAK_EVENTS) DIRLOCKD_SOAK_FOR=$(SOAK_FOR) DIRLOCKD_SOAK_REPORT=$(CURDIR)/docs/reliability.md \
	unshare --ipc -- $(GO) test -tags soak -count=1 -timeout 24h -parallel 3 -run '^TestLeaseSoak$$' -v ./integration/

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
