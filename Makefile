# untorn — the two commands a user needs:
#   make demo   install what is needed and run the quick start
#   make test   install what is needed and run every test stage (what CI runs)

GO      ?= go
BIN     := $(CURDIR)/build/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/untorn/untorn/pkg/driver.Version=$(VERSION)

.PHONY: all build shim demo test deps chart e2e vm clean

all: build shim

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

shim:
	$(MAKE) -C pkg/atomic/shim OUT=$(CURDIR)/build/shim

deps:
	hack/install-deps.sh

demo:
	hack/demo.sh

test:
	hack/test.sh

chart:
	hack/test.sh chart

e2e:
	hack/e2e.sh

vm:
	hack/vm.sh build

clean:
	rm -rf build
