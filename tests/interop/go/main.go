// interop-go sends tests/interop/scenario.json's spans and log record to an OTLP endpoint with
// the OpenTelemetry Go SDK and its stock exporters, configured the way their docs show.
//
//	interop-go -scenario FILE -base UNIX_SECONDS -endpoint HOST:PORT -service NAME -mode MODE
//
// MODE: http (otlptracehttp + otlploghttp), http-gzip (the same with gzip: Go then sends
// chunked bodies), grpc (otlptracegrpc + otlploggrpc). Exits 1 when an export failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	otellog "go.opentelemetry.io/otel/log"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

type attr struct {
	Key    string   `json:"key"`
	String *string  `json:"string"`
	Int    *int64   `json:"int"`
	Double *float64 `json:"double"`
	Bool   *bool    `json:"bool"`
}

type event struct {
	Name       string `json:"name"`
	AtMs       int64  `json:"at_ms"`
	Attributes []attr `json:"attributes"`
}

type span struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Kind       string  `json:"kind"`
	StartMs    int64   `json:"start_ms"`
	EndMs      int64   `json:"end_ms"`
	Error      string  `json:"error"`
	Attributes []attr  `json:"attributes"`
	Events     []event `json:"events"`
}

type scenario struct {
	Root  span   `json:"root"`
	Calls []span `json:"calls"`
	Log   struct {
		Span           string `json:"span"`
		AtMs           int64  `json:"at_ms"`
		SeverityNumber int    `json:"severity_number"`
		SeverityText   string `json:"severity_text"`
		Body           string `json:"body"`
		Attributes     []attr `json:"attributes"`
	} `json:"log"`
}

// errs collects what the SDK reports through otel.Handle (batch export failures).
type errs struct {
	mu   sync.Mutex
	list []error
}

func (e *errs) Handle(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, err)
}

func attributes(in []attr) []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, len(in))
	for _, a := range in {
		switch {
		case a.String != nil:
			out = append(out, attribute.String(a.Key, *a.String))
		case a.Int != nil:
			out = append(out, attribute.Int64(a.Key, *a.Int))
		case a.Double != nil:
			out = append(out, attribute.Float64(a.Key, *a.Double))
		case a.Bool != nil:
			out = append(out, attribute.Bool(a.Key, *a.Bool))
		}
	}
	return out
}

func kind(k string) trace.SpanKind {
	if k == "client" {
		return trace.SpanKindClient
	}
	return trace.SpanKindInternal
}

func exporters(ctx context.Context, mode, endpoint string) (sdktrace.SpanExporter, sdklog.Exporter, error) {
	switch mode {
	case "http", "http-gzip":
		topts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure()}
		lopts := []otlploghttp.Option{otlploghttp.WithEndpoint(endpoint), otlploghttp.WithInsecure()}
		if mode == "http-gzip" {
			topts = append(topts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
			lopts = append(lopts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
		}
		te, err := otlptracehttp.New(ctx, topts...)
		if err != nil {
			return nil, nil, err
		}
		le, err := otlploghttp.New(ctx, lopts...)
		return te, le, err
	case "grpc":
		te, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			return nil, nil, err
		}
		le, err := otlploggrpc.New(ctx, otlploggrpc.WithEndpoint(endpoint), otlploggrpc.WithInsecure())
		return te, le, err
	}
	return nil, nil, fmt.Errorf("unknown mode %q", mode)
}

func run() error {
	path := flag.String("scenario", "", "scenario JSON file")
	base := flag.Int64("base", 0, "base time, Unix seconds")
	endpoint := flag.String("endpoint", "", "HOST:PORT")
	service := flag.String("service", "interop-go", "service.name")
	mode := flag.String("mode", "http", "http | http-gzip | grpc")
	flag.Parse()

	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	var sc scenario
	if err := json.Unmarshal(data, &sc); err != nil {
		return err
	}
	at := func(ms int64) time.Time { return time.Unix(*base, ms*int64(time.Millisecond)) }

	failures := &errs{}
	otel.SetErrorHandler(failures)
	ctx := context.Background()
	te, le, err := exporters(ctx, *mode, *endpoint)
	if err != nil {
		return err
	}
	res := resource.NewSchemaless(semconv.ServiceName(*service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(te), sdktrace.WithResource(res))
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(le)), sdklog.WithResource(res))
	tracer := tp.Tracer("interop-go")

	rootCtx, root := tracer.Start(ctx, sc.Root.Name, trace.WithTimestamp(at(sc.Root.StartMs)),
		trace.WithSpanKind(kind(sc.Root.Kind)), trace.WithAttributes(attributes(sc.Root.Attributes)...))
	contexts := map[string]context.Context{}
	for _, c := range sc.Calls {
		cctx, s := tracer.Start(rootCtx, c.Name, trace.WithTimestamp(at(c.StartMs)),
			trace.WithSpanKind(kind(c.Kind)), trace.WithAttributes(attributes(c.Attributes)...))
		for _, ev := range c.Events {
			s.AddEvent(ev.Name, trace.WithTimestamp(at(ev.AtMs)), trace.WithAttributes(attributes(ev.Attributes)...))
		}
		if c.Error != "" {
			s.SetStatus(codes.Error, c.Error)
		}
		s.End(trace.WithTimestamp(at(c.EndMs)))
		contexts[c.ID] = cctx
	}

	l := sc.Log
	var rec otellog.Record
	rec.SetTimestamp(at(l.AtMs))
	rec.SetObservedTimestamp(at(l.AtMs))
	rec.SetSeverity(otellog.Severity(l.SeverityNumber))
	rec.SetSeverityText(l.SeverityText)
	rec.SetBody(attribute.StringValue(l.Body))
	rec.AddAttributes(attributes(l.Attributes)...)
	lctx, ok := contexts[l.Span]
	if !ok {
		return fmt.Errorf("log span %q is not a call", l.Span)
	}
	lp.Logger("interop-go").Emit(lctx, rec)
	root.End(trace.WithTimestamp(at(sc.Root.EndMs)))

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = errors.Join(tp.ForceFlush(sctx), lp.ForceFlush(sctx), tp.Shutdown(sctx), lp.Shutdown(sctx))
	failures.mu.Lock()
	defer failures.mu.Unlock()
	return errors.Join(append([]error{err}, failures.list...)...)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "interop-go:", err)
		os.Exit(1)
	}
	fmt.Println("interop-go: sent")
}
