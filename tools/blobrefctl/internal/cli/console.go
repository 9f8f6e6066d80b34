package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/blobref/blobref/tools/blobrefctl/internal/console"
)

// consoleCommand is console's help.
var consoleCommand = commandSpec{
	name:     "console",
	synopsis: "blobrefctl console [--addr A] [--tokens-file F]",
	about: `Serve the operators' web console on A (CONSOLE_ADDR, by default
127.0.0.1:8090) until interrupted: find an upload by id, subject (users/42/*
for those under users/42/) or Idempotency-Key and see its steps, timeline,
events and dead letters; see each step's consumer lag and redeliveries; list
the dead letters and re-drive them, as blobrefctl dlq redrive does.

The pages ask for a bearer token. Tokens come from F (CONSOLE_TOKENS_FILE),
one "token name [scopes]" per line, and from CONSOLE_TOKENS, comma-separated
"token=name[:scopes]" entries. Scopes are read (every page) and operate
(re-drive); none, or *, is both. Tokens must be at least 32 random
characters (openssl rand -hex 24). Keep A on a loopback or private address:
the console speaks plain HTTP.

The console reads Postgres in read-only transactions and re-drives with the
NATS user's rights: run it with an operator's credentials.`,
}

// ConsoleFlags are console's flags; empty ones take the environment's.
type ConsoleFlags struct {
	Addr       string
	TokensFile string
}

// parseConsole parses console's flags.
func parseConsole(args []string, help io.Writer) (Command, error) {
	c := Command{Name: "console"}
	fs := flag.NewFlagSet("blobrefctl console", flag.ContinueOnError)
	fs.StringVar(&c.Console.Addr, "addr", "", "listen on this host:port (default CONSOLE_ADDR, or "+console.DefaultAddr+")")
	fs.StringVar(&c.Console.TokensFile, "tokens-file", "", "the tokens file (default CONSOLE_TOKENS_FILE)")
	if err := parseFlags(fs, args, consoleCommand, help); err != nil {
		return Command{}, err
	}
	if c.Console.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Console.Addr); err != nil {
			return Command{}, fmt.Errorf("%w: --addr: %q is not host:port", errUsage, c.Console.Addr)
		}
	}
	return c, nil
}

// server returns the console's server with its tokens, before anything
// connects: a bad token stops blobrefctl at once.
func (f ConsoleFlags) server(cfg *config) (*console.Server, error) {
	file := cfg.ConsoleTokensFile
	if f.TokensFile != "" {
		file = f.TokensFile
	}
	tokens, err := console.LoadTokens(cfg.ConsoleTokens, file)
	if err != nil {
		return nil, err
	}
	return &console.Server{Tokens: tokens}, nil
}

// serve listens and serves srv until ctx is done.
func (f ConsoleFlags) serve(ctx context.Context, srv *console.Server, cfg *config, stdout io.Writer) error {
	addr := cfg.ConsoleAddr
	if f.Addr != "" {
		addr = f.Addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "console: http://%s/ (%d %s; interrupt to stop)\n", ln.Addr(), srv.Tokens.Len(), plural(srv.Tokens.Len(), "token"))
	return srv.Run(ctx, ln)
}
