// Sends tests/interop/scenario.json's spans and log record with the OpenTelemetry JS SDK and its
// stock OTLP exporters (installed by scripts/setup-interop.sh; NODE_PATH points at them).
//
//   node client.cjs SCENARIO BASE_UNIX_SECONDS MODE ENDPOINT SERVICE
//
// MODE: json (exporter-*-otlp-http), proto (exporter-*-otlp-proto), grpc (exporter-*-otlp-grpc).
// ENDPOINT: http://HOST:PORT. Exits 1 when an export did not succeed.
'use strict';

const fs = require('node:fs');
const api = require('@opentelemetry/api');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');

const [scenarioPath, baseArg, mode, endpoint, service] = process.argv.slice(2);
const scenario = JSON.parse(fs.readFileSync(scenarioPath, 'utf8'));
const base = Number(baseArg);

// HrTime [seconds, nanoseconds]: exact, unlike a millisecond number (a float).
const at = (ms) => [base + Math.floor(ms / 1000), (ms % 1000) * 1e6];

function attributes(list) {
  const out = {};
  for (const a of list || []) {
    if ('string' in a) out[a.key] = a.string;
    else if ('int' in a) out[a.key] = a.int; // an integral JS number: the SDK sends intValue
    else if ('double' in a) out[a.key] = a.double;
    else if ('bool' in a) out[a.key] = a.bool;
  }
  return out;
}

function exporters() {
  const pkg = { json: 'http', proto: 'proto', grpc: 'grpc' }[mode];
  if (!pkg) throw new Error(`unknown mode ${mode}`);
  const { OTLPTraceExporter } = require(`@opentelemetry/exporter-trace-otlp-${pkg}`);
  const { OTLPLogExporter } = require(`@opentelemetry/exporter-logs-otlp-${pkg}`);
  if (mode === 'grpc') {
    return [new OTLPTraceExporter({ url: endpoint }), new OTLPLogExporter({ url: endpoint })];
  }
  return [
    new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }),
    new OTLPLogExporter({ url: `${endpoint}/v1/logs` }),
  ];
}

// The batch processors only log a failed export: this wrapper remembers it for the exit code.
const failures = [];
function checked(exporter, signal) {
  return {
    export(items, done) {
      exporter.export(items, (result) => {
        if (result.code !== 0) failures.push(`${signal}: ${result.error && result.error.message}`);
        done(result);
      });
    },
    forceFlush: () => (exporter.forceFlush ? exporter.forceFlush() : Promise.resolve()),
    shutdown: () => exporter.shutdown(),
  };
}

async function main() {
  const [traceExporter, logExporter] = exporters();
  const resource = resourceFromAttributes({ 'service.name': service });
  const tracerProvider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(checked(traceExporter, 'traces'))],
  });
  const loggerProvider = new LoggerProvider({
    resource,
    processors: [new BatchLogRecordProcessor({ exporter: checked(logExporter, 'logs') })],
  });
  const tracer = tracerProvider.getTracer('interop-node');
  const kinds = { client: api.SpanKind.CLIENT, internal: api.SpanKind.INTERNAL };

  const r = scenario.root;
  const root = tracer.startSpan(r.name, {
    kind: kinds[r.kind],
    startTime: at(r.start_ms),
    attributes: attributes(r.attributes),
  });
  const rootCtx = api.trace.setSpan(api.ROOT_CONTEXT, root);
  const contexts = {};
  for (const c of scenario.calls) {
    const span = tracer.startSpan(
      c.name,
      { kind: kinds[c.kind], startTime: at(c.start_ms), attributes: attributes(c.attributes) },
      rootCtx,
    );
    for (const ev of c.events || []) span.addEvent(ev.name, attributes(ev.attributes), at(ev.at_ms));
    if (c.error) span.setStatus({ code: api.SpanStatusCode.ERROR, message: c.error });
    span.end(at(c.end_ms));
    contexts[c.id] = api.trace.setSpan(rootCtx, span);
  }

  const l = scenario.log;
  loggerProvider.getLogger('interop-node').emit({
    timestamp: at(l.at_ms),
    observedTimestamp: at(l.at_ms),
    severityNumber: l.severity_number,
    severityText: l.severity_text,
    body: l.body,
    attributes: attributes(l.attributes),
    context: contexts[l.span],
  });
  root.end(at(r.end_ms));

  await tracerProvider.forceFlush();
  await loggerProvider.forceFlush();
  await tracerProvider.shutdown();
  await loggerProvider.shutdown();
  if (failures.length) {
    console.error(`interop-node: export failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('interop-node: sent');
}

main().catch((e) => {
  console.error('interop-node:', e);
  process.exit(1);
});
