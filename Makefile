# ngx_wa: the nginx module, wa-writer, unit tests, and the two commands
# every user needs: `make run` and `make test`.

NGINX_SRC   ?= /usr/share/nginx/src
BUILD       := $(CURDIR)/build
# make test-asan builds here, with SAN_FLAGS
SAN_BUILD   := $(CURDIR)/build-asan
SAN_FLAGS   ?=
NGX_BUILD   := $(BUILD)/nginx
MODULE      := $(NGX_BUILD)/ngx_http_wa_module.so
WRITER      := $(BUILD)/wa-writer
# feeds a ring from a script: the tests, bench and valgrind use it
FEED        := $(BUILD)/wa-feed

CC          ?= cc
WFLAGS      := -Wall -Wextra -Werror
CFLAGS      ?= -O2 -g
ALL_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WFLAGS) $(CFLAGS) $(SAN_FLAGS)
PG_INC      := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)

# plain C shared by the module, the writer, the tools and the unit tests
SHARED_SRCS := $(wildcard common/*.c)
SHARED_HDRS := $(wildcard common/*.h)
PARSE_SRCS  := ngx_wa_module/wa_webhook_parse.c ngx_wa_module/wa_send_parse.c

MODULE_SRCS := $(wildcard ngx_wa_module/*.c ngx_wa_module/*.h) \
               $(SHARED_SRCS) $(SHARED_HDRS) config
WRITER_SRCS := $(wildcard writer/*.c writer/*.h)
# schema migrations (append-only) and function files (re-applied when
# they change), each applied in the order of their names
SQL_SCHEMA  := $(sort $(wildcard sql/schema/*.sql))
SQL_FUNCS   := $(sort $(wildcard sql/functions/*.sql))

UNIT_SRCS   := $(wildcard t/unit/test_*.c)
UNIT_BINS   := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(UNIT_SRCS))
# preloaded into nginx by the tests that stall or kill a producer mid-claim
SHIM        := $(BUILD)/t/ring_hook.so
# preloaded into nginx by the tests of wa_ring sync=on: a slow or failing disk
SYNC_SHIM   := $(BUILD)/t/sync_hook.so

PROVE       ?= prove

FUZZ_CC     ?= clang
FUZZ_FLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=undefined -D_GNU_SOURCE
FUZZ_TIME   ?= 600
FUZZ_SRCS   := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS   := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))

.PHONY: all deps module writer tools unit test test-asan valgrind bench bench-pacing run fuzz fuzz-deps deb deb-deps clean

all: module writer tools unit

deps:
	@sh scripts/deps.sh

module: $(MODULE)
writer: $(WRITER)
tools: $(FEED)
unit: $(UNIT_BINS) $(SHIM) $(SYNC_SHIM) $(FEED)

# nginx's configure writes into the tree it runs in: work on a copy so the
# system's nginx-dev tree stays untouched. The flags are Debian's, so the
# module's signature matches /usr/sbin/nginx, and CPPFLAGS (fortify) as
# Debian's module packages have them, but under the sanitizers, which
# check those calls themselves.
MOD_CPPFLAGS = $(if $(SAN_FLAGS),,$$(dpkg-buildflags --get CPPFLAGS))
$(NGX_BUILD)/Makefile: config
	rm -rf $(BUILD)/nginx-src $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(BUILD)/nginx-src
	cd $(BUILD)/nginx-src && bash -c '. ./conf_flags && ./configure \
	    --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) -fPIC $(MOD_CPPFLAGS) -Wextra -Werror $(SAN_FLAGS)" \
	    --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS) -fPIC $(SAN_FLAGS)" \
	    "$${NGX_CONF_FLAGS[@]}" \
	    --add-dynamic-module=$(CURDIR) \
	    --builddir=$(NGX_BUILD)' > $(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/Makefile $(MODULE_SRCS)
	$(MAKE) -s -f $(NGX_BUILD)/Makefile -C $(BUILD)/nginx-src modules

$(BUILD)/wa_migrations.c: $(SQL_SCHEMA) $(SQL_FUNCS) writer/embed-sql.sh
	@mkdir -p $(BUILD)
	sh writer/embed-sql.sh $@ $(SQL_SCHEMA) -- $(SQL_FUNCS)

$(WRITER): $(WRITER_SRCS) $(SHARED_SRCS) $(SHARED_HDRS) $(BUILD)/wa_migrations.c
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -I common -I writer -I $(PG_INC) -o $@ \
	    $(filter %.c,$(WRITER_SRCS)) $(SHARED_SRCS) $(BUILD)/wa_migrations.c \
	    $(LDFLAGS) -lpq -lcurl -lcjson

$(BUILD)/t/%: t/unit/%.c t/unit/tap.h $(SHARED_SRCS) $(SHARED_HDRS) $(PARSE_SRCS)
	@mkdir -p $(BUILD)/t
	$(CC) $(ALL_CFLAGS) -I common -I ngx_wa_module -I t/unit -o $@ $< \
	    $(SHARED_SRCS) $(PARSE_SRCS) -lcjson

$(FEED): tools/wa-feed.c $(SHARED_SRCS) $(SHARED_HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(ALL_CFLAGS) -I common -o $@ $< $(SHARED_SRCS)


# defines the weak wa_ring_test_hook(); no sanitizer flags: it is loaded
# after ASan's runtime into an nginx that is not instrumented
$(SHIM): t/shim/ring_hook.c common/wa_ring.h
	@mkdir -p $(BUILD)/t
	$(CC) -std=c11 -D_GNU_SOURCE $(WFLAGS) $(CFLAGS) -shared -fPIC \
	    -I common -o $@ $<

# wraps fdatasync/fsync/msync of the ring file; same build as the above
$(SYNC_SHIM): t/shim/sync_hook.c
	@mkdir -p $(BUILD)/t
	$(CC) -std=c11 -D_GNU_SOURCE $(WFLAGS) $(CFLAGS) -shared -fPIC \
	    -o $@ $< -ldl

# the ring's fault tests again with wa_ring ... sync=on (acknowledged
# means on disk): the same guarantees must hold when every answer, and
# every send's call, waits for a sync. Not t/46: under sync=on its strict
# mock still refuses a few sends in some runs (see README, Pacing)
SYNC_TESTS  := t/30-writer-faults.t t/70-faults.t t/72-ring-claims.t

# no terminal for the daemons the tests start. A failure's diagnostics
# are printed again after the summary: a CI log is often read from its end
test: deps all
	@{ $(PROVE) t/ < /dev/null; rc=$$?; \
	   echo '--- the ring fault tests again, with wa_ring ... sync=on'; \
	   WA_RING_SYNC=1 $(PROVE) $(SYNC_TESTS) < /dev/null || rc=1; \
	   echo $$rc > $(BUILD)/test.rc; } 2>&1 | tee $(BUILD)/test.log
	@rc=$$(cat $(BUILD)/test.rc); [ "$$rc" = 0 ] || { \
	    echo '--- the failures again:'; \
	    grep -A12 '^#   Failed test' $(BUILD)/test.log | tail -n 150; \
	    exit $$rc; }

# The whole suite again with the module, the writer and the unit tests
# built with ASan and UBSan. Debian's nginx is not instrumented: it loads
# the ASan runtime first (LD_PRELOAD) so the module's checks work; its own
# allocations are not leak-checked, the writer's are. Any report fails.
SAN_CFLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
               -fno-omit-frame-pointer
test-asan: deps all
	$(MAKE) BUILD=$(SAN_BUILD) SAN_FLAGS="$(SAN_CFLAGS)" module writer unit
	rm -rf $(SAN_BUILD)/reports && mkdir -p $(SAN_BUILD)/reports
	chmod 1777 $(SAN_BUILD)/reports
	WA_BUILD=$(SAN_BUILD) WA_SAN_REPORTS=$(SAN_BUILD)/reports \
	WA_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=1:log_path=$(SAN_BUILD)/reports/asan \
	UBSAN_OPTIONS=print_stacktrace=1:log_path=$(SAN_BUILD)/reports/ubsan \
	    $(PROVE) t/ < /dev/null
	@if ls $(SAN_BUILD)/reports | grep -q .; then \
	    head -50 $(SAN_BUILD)/reports/*; \
	    echo "test-asan: sanitizer reports above"; exit 1; \
	fi
	@echo "test-asan: no sanitizer report"

# wa-writer under valgrind over VALGRIND_RECORDS records: no error, no leak
VALGRIND_RECORDS ?= 100000
valgrind: deps all
	@sh scripts/deps.sh valgrind
	perl scripts/valgrind-writer.pl $(VALGRIND_RECORDS) < /dev/null

# benchmarks against their references, one run, a table (not a test)
BENCH_SECS ?= 8
bench: deps all bench-pacing
	@sh scripts/deps.sh bench
	perl bench/run.pl $(BENCH_SECS) < /dev/null

# the send limiter's own cost, timed inside a build of the module made for
# it (build-bench/, NGX_HTTP_WA_PACE_BENCH); see bench/pacing.pl
BENCH_BUILD := $(CURDIR)/build-bench
bench-pacing: deps
	@sh scripts/deps.sh bench
	$(MAKE) BUILD=$(BENCH_BUILD) SAN_FLAGS=-DNGX_HTTP_WA_PACE_BENCH module writer
	WA_BUILD=$(BENCH_BUILD) perl bench/pacing.pl < /dev/null

run: deps all
	sh scripts/run.sh

# Debian packages (libnginx-mod-http-wa, wa-writer) into $(DEB_DIR), built
# by dpkg-buildpackage from debian/ on a copy of the tree (it writes its
# results next to the tree it builds), then checked by lintian. Rebuilt
# only when a file that goes into them changed.
DEB_DIR     := $(BUILD)/deb
DEB_STAMP   := $(DEB_DIR)/.built
DEB_INPUTS  := $(MODULE_SRCS) $(WRITER_SRCS) $(SQL_SCHEMA) $(SQL_FUNCS) \
               writer/embed-sql.sh Makefile README.md conf/nginx.conf conf/wa-alerts.yml \
               conf/wa-writer.service conf/wa-media.service conf/wa-writer.env \
               docs/wa-writer.1 \
               $(shell find debian -type f 2>/dev/null)
deb-deps: deps
	@sh scripts/deps.sh deb

deb: deb-deps $(DEB_STAMP)

$(DEB_STAMP): $(DEB_INPUTS)
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	tar -C $(CURDIR) --exclude=./.git --exclude=./build --exclude=./build-asan \
	    --exclude=./run --exclude=./$(patsubst $(CURDIR)/%,%,$(BUILD)) \
	    -cf - . | tar -C $(DEB_DIR)/src -xf -
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc > $(DEB_DIR)/build.log 2>&1 \
	    || { tail -40 $(DEB_DIR)/build.log; exit 1; }
	lintian --fail-on error --info $(DEB_DIR)/*.changes | tee $(DEB_DIR)/lintian.log
	rm -rf $(DEB_DIR)/src
	@ls $(DEB_DIR)/*.deb
	@touch $@

# each target runs FUZZ_TIME seconds over its committed seed corpus
# (fuzz/corpus/NAME); new inputs it finds stay under build/fuzz/
fuzz-deps: deps
	@sh scripts/deps.sh fuzz

fuzz: fuzz-deps $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do \
	    n=$$(basename $$f | sed 's/^fuzz_//'); \
	    mkdir -p $(BUILD)/fuzz/corpus-$$n fuzz/corpus/$$n; \
	    echo "fuzz: $$n for $(FUZZ_TIME)s"; \
	    rc=0; $$f -max_total_time=$(FUZZ_TIME) -max_len=1048576 \
	        -print_final_stats=1 $(BUILD)/fuzz/corpus-$$n fuzz/corpus/$$n \
	        > $(BUILD)/fuzz/$$n.log 2>&1 || rc=$$?; \
	    tail -12 $(BUILD)/fuzz/$$n.log; \
	    [ $$rc = 0 ] || { echo "fuzz: $$n failed ($$rc), see $(BUILD)/fuzz/$$n.log"; exit 1; }; \
	done

$(BUILD)/fuzz/%: fuzz/%.c $(SHARED_SRCS) $(SHARED_HDRS) $(PARSE_SRCS)
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -I common -I ngx_wa_module -o $@ $< \
	    $(SHARED_SRCS) $(PARSE_SRCS) -lcjson

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(BENCH_BUILD)
