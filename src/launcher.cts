#!/usr/bin/env node
/**
 * The daemon's entry point: the `qwen-edge` bin, `npm start` and the systemd unit (through
 * deploy/install.sh's wrapper) all start this file. It sets what must be in the environment before
 * Node starts libuv's thread pool, then loads the CLI (main.js). It is CommonJS on purpose: Node's
 * ESM loader starts the pool before the first line of any ES module runs, so an ES module is too late.
 *
 * UV_THREADPOOL_SIZE=1. node-llama-cpp runs every llama_decode as an N-API AsyncWorker on libuv's
 * pool. With the default 4 pool threads, consecutive decodes start on different threads, ggml's
 * compute threads (an OpenMP team per calling thread, or fresh threads per call in the prebuilt
 * binary) follow them, and the scheduler keeps putting two compute threads on one core, where
 * they spin at ggml's barriers. Measured at 2 threads on a 2-core x64 VM, medium bench model: 5.8
 * of 9.1 ms per token spent runnable but waiting for a CPU; with one pool thread 4.1 ms per token
 * (prebuilt binary: 14.1 -> 4.9 ms). docs/ENGINE-SPEED.md has the measurements. The daemon's own
 * pool work (the model download, telemetry reads, DNS lookups) is light; the job journal does not
 * use the pool (src/jobs/store.ts), so an accepted request is never queued behind a decode.
 *
 * A value already in the environment wins (e.g. UV_THREADPOOL_SIZE=4 to compare).
 */
if (process.env.UV_THREADPOOL_SIZE === undefined || process.env.UV_THREADPOOL_SIZE === "") {
    process.env.UV_THREADPOOL_SIZE = "1";
}
void import("./main.js");
