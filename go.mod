module github.com/dirlockd/dirlockd

go 1.26.0

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/lmittmann/tint v1.2.1
	github.com/spf13/pflag v1.0.10
	golang.org/x/sys v0.49.0
)

require github.com/russross/blackfriday/v2 v2.1.0 // indirect
