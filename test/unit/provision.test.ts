// Provisioning against a local HTTP server with Range support (no internet here): download, resume,
// checksums, offline, local files, damaged files, disk space — and a real disk-full on a tmpfs.
import {after, before, describe, it} from "node:test";
import assert from "node:assert/strict";
import {spawn, spawnSync} from "node:child_process";
import {createHash} from "node:crypto";
import http from "node:http";
import {mkdtemp, readdir, readFile, rm, utimes, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import path from "node:path";
import {ChecksumMismatchError, ModelUnavailableError, NoSpaceError} from "../../src/errors.js";
import {checkGgufFile, ModelFileError, provisionModel, type ModelTarget, type ProvisionOptions, type ProvisionProgress} from "../../src/models/provision.js";
import {ProgressBar, renderProgress} from "../../src/models/progress-bar.js";
import {encodeGguf, str, u32} from "../../src/testing/gguf-writer.js";
import {buildTinyQwen35} from "../../src/testing/tiny-qwen35.js";

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const SMALL = buildTinyQwen35({kind: "random", seed: 7});
// > 10 MiB: ipull saves progress per 5 MiB chunk, so resuming needs several chunks
const BIG = buildTinyQwen35({kind: "random", seed: 11, hidden: 192, layers: 8, weightType: "f32"});
const HF = {owner: "acme", repo: "Tiny-GGUF", file: "Tiny-Q4.gguf", token: "hf_secret_token_123"};

interface Served {method: string; path: string; start: number | null; length: number; bytes: number; auth: boolean}

/** Serves one model at /models/m.gguf, and as the Hugging Face repo HF (paths-info API + resolve redirect). */
class ModelServer {
    public requests: Served[] = [];
    /** ranged requests starting at or after this byte send 512 KiB then drop the connection; retries then hang */
    public breakFrom: number | null = null;
    /** every ranged body sends 64 KiB and then hangs */
    public hang = false;
    public apiSha256: string | null = null;
    private readonly hung = new Set<http.ServerResponse>();
    private readonly broken = new Set<number>();
    private readonly server = http.createServer((req, res) => this.handle(req, res));
    public port = 0;
    public constructor(public data: Buffer) {}

    public async start(port = 0): Promise<this> {
        await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", resolve));
        this.port = (this.server.address() as {port: number}).port;
        return this;
    }
    public async stop(): Promise<void> {
        this.server.closeAllConnections();
        await new Promise<void>((resolve) => this.server.close(() => resolve()));
    }
    public get url(): string { return `http://127.0.0.1:${this.port}/models/m.gguf`; }
    public get endpoint(): string { return `http://127.0.0.1:${this.port}/`; }
    /** ranged body bytes sent, not counting our 1-byte probes */
    public get bodyBytes(): number { return this.requests.filter((r) => r.start !== null && r.length > 1).reduce((a, r) => a + r.bytes, 0); }
    /**
     * Ends hung responses and serves the retries that follow, so that each abandoned ipull download ends
     * quietly (a 4xx or a refused connection would end it with stray rejections) before the next test.
     */
    public async drain(expectRetries = true): Promise<void> {
        const waiting = expectRetries ? this.hung.size : 0;
        const seen = this.requests.length;
        Object.assign(this, {hang: false, breakFrom: null});
        for (const res of this.hung) res.destroy();
        this.hung.clear();
        for (const until = Date.now() + 8000; this.requests.length - seen < waiting && Date.now() < until;)
            await new Promise((resolve) => setTimeout(resolve, 50));
        await new Promise((resolve) => setTimeout(resolve, 200));
    }

    private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
        const url = new URL(req.url ?? "/", "http://x");
        const record: Served = {method: req.method ?? "", path: url.pathname, start: null, length: 0, bytes: 0, auth: req.headers.authorization !== undefined};
        this.requests.push(record);
        const hfBase = `/${HF.owner}/${HF.repo}`;
        if (req.method === "POST" && url.pathname === `/api/models${hfBase}/paths-info/main`) {
            res.writeHead(200, {"content-type": "application/json"});
            res.end(JSON.stringify([{type: "file", path: HF.file, size: this.data.length, oid: "0".repeat(40),
                lfs: {oid: this.apiSha256 ?? sha(this.data), size: this.data.length, pointerSize: 134}}]));
            return;
        }
        if (url.pathname === `${hfBase}/resolve/main/${HF.file}`) {
            // a gated repo: like the Hub, 401 without the token, else a redirect to the storage
            if (req.headers.authorization !== `Bearer ${HF.token}`) { res.writeHead(401).end(); return; }
            res.writeHead(302, {location: "/cdn/blob?sig=1", "x-linked-etag": `"${this.apiSha256 ?? sha(this.data)}"`}).end();
            return;
        }
        if (url.pathname !== "/models/m.gguf" && url.pathname !== "/cdn/blob") { res.writeHead(404).end(); return; }
        const size = this.data.length;
        const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
        const start = m ? Number(m[1]) : 0;
        const end = m?.[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
        Object.assign(record, {start: m ? start : null, length: end - start + 1});
        res.writeHead(m ? 206 : 200, {"content-length": end - start + 1, "accept-ranges": "bytes",
            ...(m ? {"content-range": `bytes ${start}-${end}/${size}`} : {})});
        if (req.method === "HEAD") { res.end(); return; }
        const body = this.data.subarray(start, end + 1);
        const send = (b: Buffer, then?: () => void): void => { record.bytes += b.length; res.write(b, then); };
        if (m && body.length > 1 && this.hang) { this.hung.add(res); return send(body.subarray(0, 64 * 1024)); }
        if (m && body.length > 1 && this.breakFrom !== null && start >= this.breakFrom) {
            if (this.broken.has(start)) { this.hung.add(res); return; } // the retry: headers, then silence
            this.broken.add(start);
            return send(body.subarray(0, 512 * 1024), () => req.socket.destroy());
        }
        send(body);
        res.end();
    }
}

function recorder(): ProvisionOptions["log"] & {lines: Array<{level: string; msg: string; meta?: object}>} {
    const lines: Array<{level: string; msg: string; meta?: object}> = [];
    return {lines, info: (msg, meta) => lines.push({level: "info", msg, meta}), warn: (msg, meta) => lines.push({level: "warn", msg, meta})};
}

let root = "";
let n = 0;
const freshDir = async (): Promise<string> => mkdtemp(path.join(root, `d${n++}-`));
const target = (uri: string, extra: Partial<ModelTarget> = {}): ModelTarget => ({variant: "tiny", quant: "Q4", uri, fileName: "Tiny-Q4.gguf", ...extra});
const options = (dir: string, extra: Partial<ProvisionOptions> = {}): ProvisionOptions =>
    ({dir, allowDownload: true, log: recorder(), retries: 0, stallTimeoutMs: 1500, retryDelayMs: 20, diskReserveBytes: 0, ...extra});
async function freePort(): Promise<number> {
    const s = await new ModelServer(SMALL).start();
    await s.stop();
    return s.port;
}
async function runChild(cmd: string, args: string[], timeoutMs: number): Promise<{status: number | null; stdout: string; stderr: string}> {
    const child = spawn(cmd, args, {stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs});
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => { stdout += b.toString(); });
    child.stderr.on("data", (b: Buffer) => { stderr += b.toString(); });
    const status = await new Promise<number | null>((resolve) => child.on("close", resolve));
    return {status, stdout, stderr};
}
async function rejection(p: Promise<unknown>): Promise<Error> {
    try { await p; } catch (err) { return err as Error; }
    assert.fail("expected a rejection");
}

before(async () => { root = await mkdtemp(path.join(tmpdir(), "qwen-edge-provision-")); });
after(async () => { await rm(root, {recursive: true, force: true}); });

describe("checkGgufFile", () => {
    const write = async (data: Buffer): Promise<string> => {
        const file = path.join(await freshDir(), "m.gguf");
        await writeFile(file, data);
        return file;
    };
    const reasonOf = async (p: Promise<void>): Promise<string> => {
        const err = await rejection(p);
        assert.ok(err instanceof ModelFileError && err instanceof ModelUnavailableError, String(err));
        assert.equal(err.code, "model_unavailable");
        return err.reason;
    };

    it("accepts a generated model, with its size and sha256", async () => {
        await checkGgufFile(await write(SMALL), {sizeBytes: SMALL.length, sha256: sha(SMALL)});
    });
    it("names what is wrong: missing, not GGUF, version, truncated, size, sha256", async () => {
        assert.equal(await reasonOf(checkGgufFile(path.join(root, "nope.gguf"))), "missing");
        assert.equal(await reasonOf(checkGgufFile(await write(Buffer.from("<html>not found</html>")))), "not_gguf");
        const v1 = Buffer.from(SMALL);
        v1.writeUInt32LE(1, 4);
        assert.equal(await reasonOf(checkGgufFile(await write(v1))), "unsupported_version");
        assert.equal(await reasonOf(checkGgufFile(await write(SMALL.subarray(0, SMALL.length - 1000)))), "truncated");
        assert.equal(await reasonOf(checkGgufFile(await write(SMALL.subarray(0, 100)))), "truncated");
        const headerOnly = encodeGguf({"general.architecture": str("qwen35"), "qwen35.block_count": u32(1)},
            [{name: "w", dims: [64, 64], type: "f32"}], {headerOnly: true});
        assert.equal(await reasonOf(checkGgufFile(await write(headerOnly))), "truncated");
        assert.equal(await reasonOf(checkGgufFile(await write(SMALL), {sizeBytes: SMALL.length + 1})), "size_mismatch");
        const flipped = Buffer.from(SMALL);
        flipped.writeUInt8(flipped.readUInt8(flipped.length - 10) ^ 0xff, flipped.length - 10);
        const file = await write(flipped);
        await checkGgufFile(file); // same size, sound structure: only a checksum can tell
        assert.equal(await reasonOf(checkGgufFile(file, {sha256: sha(SMALL)})), "sha256_mismatch");
    });
});

describe("provisionModel", () => {
    let server: ModelServer;
    before(async () => { server = await new ModelServer(SMALL).start(); });
    after(async () => { await server.stop(); });
    const reset = (data: Buffer): void => {
        Object.assign(server, {data, requests: [], breakFrom: null, hang: false, apiSha256: null});
    };

    it("downloads over http, verifies the sha256 and renames into place", async () => {
        reset(SMALL);
        const dir = await freshDir();
        const phases: ProvisionProgress["phase"][] = [];
        const got = await provisionModel(target(server.url, {sha256: sha(SMALL), sizeBytes: SMALL.length}),
            options(dir, {onProgress: (p) => { if (phases.at(-1) !== p.phase) phases.push(p.phase); }}));
        assert.deepEqual(got, {path: path.join(dir, "Tiny-Q4.gguf"), bytes: SMALL.length, sha256: sha(SMALL), verified: true, source: "download"});
        assert.ok((await readFile(got.path)).equals(SMALL));
        assert.deepEqual(phases, ["checking", "downloading", "verifying", "ready"]);
        assert.deepEqual((await readdir(dir)).sort(), ["Tiny-Q4.gguf", "Tiny-Q4.gguf.verified.json"]);
    });

    it("hf: URI of a gated repo: sha256 from the Hub API, the token sent but never logged", async () => {
        reset(SMALL);
        const dir = await freshDir();
        const log = recorder();
        const got = await provisionModel(target(`hf:${HF.owner}/${HF.repo}/${HF.file}`),
            options(dir, {log, hfEndpoint: server.endpoint, hfToken: HF.token}));
        assert.equal(got.verified, true);
        assert.equal(got.sha256, sha(SMALL));
        assert.ok(server.requests.some((r) => r.method === "POST" && r.path.endsWith("/paths-info/main") && r.auth));
        assert.ok(!JSON.stringify(log.lines).includes(HF.token), "the token appears in the log");
    });

    it("rejects a sha256 mismatch and removes the file", async () => {
        reset(SMALL);
        const cases: Array<[string, Partial<ModelTarget>, Partial<ProvisionOptions>]> = [
            [server.url, {sha256: "ab".repeat(32)}, {}],
            [`hf:${HF.owner}/${HF.repo}/${HF.file}`, {}, {hfEndpoint: server.endpoint, hfToken: HF.token}]
        ];
        for (const [uri, extra, opts] of cases) {
            server.apiSha256 = "cd".repeat(32); // what the Hub API and X-Linked-Etag claim
            const dir = await freshDir();
            const err = await rejection(provisionModel(target(uri, extra), options(dir, opts)));
            assert.ok(err instanceof ChecksumMismatchError, String(err));
            assert.equal(err.code, "checksum_mismatch");
            assert.deepEqual(await readdir(dir), []);
        }
    });

    it("resumes an interrupted download from its partial file", async () => {
        reset(BIG);
        server.breakFrom = 1; // every range but the first is cut, and its retry hangs
        const dir = await freshDir();
        const t = target(server.url, {fileName: "Big.gguf", sha256: sha(BIG)});
        const err = await rejection(provisionModel(t, options(dir, {stallTimeoutMs: 1000})));
        assert.ok(err instanceof ModelUnavailableError && /no data for 1 s/.test(err.message), String(err));
        assert.deepEqual(await readdir(dir), ["Big.gguf.partial.ipull"]);
        await server.drain();

        reset(BIG);
        const got = await provisionModel(t, options(dir));
        const ranged = server.requests.filter((r) => r.length > 1 && r.start !== null);
        assert.ok(ranged.length > 0 && ranged.every((r) => (r.start ?? 0) > 0), `ranges asked: ${JSON.stringify(ranged)}`);
        assert.ok(server.bodyBytes <= BIG.length - 5 * 1024 * 1024, `refetched ${server.bodyBytes} of ${BIG.length} bytes`);
        assert.ok((await readFile(got.path)).equals(BIG));
        assert.equal(got.verified, true);
    });

    it("offline with no file: one clear error naming the file, the directory and the URL", async () => {
        const port = await freePort();
        const dir = await freshDir();
        const url = `http://127.0.0.1:${port}/models/m.gguf`;
        const started = Date.now();
        const err = await rejection(provisionModel(target(url), options(dir, {retries: 1})));
        assert.ok(err instanceof ModelUnavailableError && !(err instanceof ModelFileError), String(err));
        assert.match(err.message, /^cannot download Tiny-Q4\.gguf \(.*ECONNREFUSED.*\): place Tiny-Q4\.gguf in /);
        assert.ok(err.message.includes(`in ${dir} (download: ${url}) or check the network`), err.message);
        assert.ok(Date.now() - started < 5000, "offline should fail fast");

        const hfErr = await rejection(provisionModel(target(`hf:${HF.owner}/${HF.repo}/${HF.file}`),
            options(dir, {hfEndpoint: `http://127.0.0.1:${port}/`})));
        assert.ok(hfErr.message.includes(`(download: http://127.0.0.1:${port}/acme/Tiny-GGUF/resolve/main/Tiny-Q4.gguf)`), hfErr.message);

        const noDl = await rejection(provisionModel(target(url), options(dir, {allowDownload: false})));
        assert.equal(noDl.message, `no model file: place Tiny-Q4.gguf in ${dir} (download: ${url}) or allow downloads`);
    });

    it("uses a pre-provisioned local file without any HTTP request, hashing it once", async () => {
        reset(SMALL);
        const dir = await freshDir();
        await writeFile(path.join(dir, "Tiny-Q4.gguf"), SMALL);
        const log = recorder();
        const t = target(server.url, {sha256: sha(SMALL)});
        for (let i = 0; i < 2; i++) {
            const got = await provisionModel(t, options(dir, {log}));
            assert.deepEqual({source: got.source, verified: got.verified, sha256: got.sha256}, {source: "local", verified: true, sha256: sha(SMALL)});
        }
        assert.equal(server.requests.length, 0);
        assert.equal(log.lines.filter((l) => l.msg.startsWith("hashing")).length, 1, "the second start should trust the recorded hash");
        const offline = await provisionModel(target("hf:x/y/Tiny-Q4.gguf"), options(dir, {allowDownload: false}));
        assert.equal(offline.source, "local");
    });

    it("sets a truncated local file aside, and fetches it again when downloads are allowed", async () => {
        reset(SMALL);
        const dir = await freshDir();
        const file = path.join(dir, "Tiny-Q4.gguf");
        await writeFile(file, SMALL.subarray(0, SMALL.length - 4096));
        const err = await rejection(provisionModel(target(server.url), options(dir, {allowDownload: false})));
        assert.ok(err instanceof ModelFileError && err.reason === "truncated", String(err));
        assert.match(err.message, /\/Tiny-Q4\.gguf: .*; moved aside as Tiny-Q4\.gguf\.corrupt-\S+: place a good copy there or allow downloads$/);
        assert.equal(server.requests.length, 0);

        await writeFile(file, SMALL.subarray(0, SMALL.length - 4096));
        const got = await provisionModel(target(server.url), options(dir));
        assert.equal(got.source, "download");
        assert.ok((await readFile(file)).equals(SMALL));
        const aside = (await readdir(dir)).filter((f) => f.includes(".corrupt-"));
        assert.equal(aside.length, 1, "only the newest damaged copy is kept");
    });

    it("detects flipped bytes of the same size: by the target's sha256, or by the hash recorded at download", async () => {
        reset(SMALL);
        const flip = async (file: string, mtime?: number): Promise<void> => {
            const b = await readFile(file);
            b.writeUInt8(b.readUInt8(b.length - 100) ^ 0x01, b.length - 100);
            await writeFile(file, b);
            if (mtime !== undefined) await utimes(file, mtime, mtime);
        };
        const dir = await freshDir();
        const file = path.join(dir, "Tiny-Q4.gguf");
        await writeFile(file, SMALL);
        await flip(file);
        const got = await provisionModel(target(server.url, {sha256: sha(SMALL)}), options(dir));
        assert.equal(got.source, "download");
        assert.ok((await readFile(file)).equals(SMALL));

        // no sha256 known (plain URL): the hash recorded when it was downloaded catches a later change
        const dir2 = await freshDir();
        const file2 = path.join(dir2, "Tiny-Q4.gguf");
        await provisionModel(target(server.url), options(dir2));
        await flip(file2);
        const err = await rejection(provisionModel(target(server.url), options(dir2, {allowDownload: false})));
        assert.ok(err instanceof ModelFileError && err.reason === "sha256_mismatch", String(err));

        // bit rot keeps the mtime: only rehash "always" sees it (whole seconds: utimes keeps no sub-ms part)
        await provisionModel(target(server.url), options(dir2));
        await utimes(file2, 1_700_000_000, 1_700_000_000);
        await provisionModel(target(server.url), options(dir2, {allowDownload: false}));
        await flip(file2, 1_700_000_000);
        assert.equal((await provisionModel(target(server.url), options(dir2, {allowDownload: false}))).source, "local");
        const rot = await rejection(provisionModel(target(server.url), options(dir2, {allowDownload: false, rehash: "always"})));
        assert.ok(rot instanceof ModelFileError && rot.reason === "sha256_mismatch", String(rot));
    });

    it("refuses to start a download the disk cannot hold", async () => {
        reset(BIG);
        const dir = await freshDir();
        const err = await rejection(provisionModel(target(server.url, {fileName: "Big.gguf"}),
            options(dir, {diskReserveBytes: 1024 * 1024, freeBytes: async () => 4 * 1024 * 1024})));
        assert.ok(err instanceof NoSpaceError, String(err));
        assert.equal(err.code, "no_space");
        assert.match(err.message, /not enough disk space in .* for Big\.gguf: 14\.3 MiB needed .* 4 MiB free/);
        assert.equal(server.bodyBytes, 0);
        assert.deepEqual(await readdir(dir), []);
    });

    it("an abort ends a stuck download at once and keeps the partial file for later", async () => {
        reset(BIG);
        server.hang = true;
        const dir = await freshDir();
        const ac = new AbortController();
        let abortedAt = 0;
        const err = await rejection(provisionModel(target(server.url, {fileName: "Big.gguf"}), options(dir, {
            signal: ac.signal, stallTimeoutMs: 60_000,
            onProgress: (p) => { if (p.phase === "downloading" && abortedAt === 0) { abortedAt = Date.now(); ac.abort(new Error("shutting down")); } }
        })));
        assert.equal(err.message, "shutting down");
        assert.ok(Date.now() - abortedAt < 1500, `took ${Date.now() - abortedAt} ms after the abort`);
        assert.ok(!(await readdir(dir)).includes("Big.gguf"));
        await server.drain(false); // aborted ranges end cleanly: no retries to wait for
    });

    it("disk full during a download (real tmpfs in a private mount namespace): partial removed, no_space", async (t) => {
        reset(BIG);
        const mnt = await freshDir();
        const probe = spawnSync("unshare", ["-m", "sh", "-c", `mount -t tmpfs -o size=1m tmpfs "${mnt}"`], {encoding: "utf8"});
        if (probe.error !== undefined || probe.status !== 0) {
            t.skip(`needs root and unshare -m to mount a tmpfs: ${probe.error?.message ?? probe.stderr.trim()}`);
            return;
        }
        // the child fills the tmpfs as soon as the download starts, as another writer on a small SD card would
        const child = path.join(mnt, "..", `fill-${path.basename(mnt)}.mjs`);
        const provisionJs = new URL("../../src/models/provision.js", import.meta.url).href;
        await writeFile(child, `import {writeFileSync, readdirSync} from "node:fs";
import {provisionModel} from ${JSON.stringify(provisionJs)};
const [dir, url] = process.argv.slice(2);
let filled = false;
let result;
try {
    const got = await provisionModel({variant: "t", quant: "q", uri: url, fileName: "Big.gguf"}, {dir, allowDownload: true, retries: 0,
        stallTimeoutMs: 10000, diskReserveBytes: 0, log: {info() {}, warn() {}},
        onProgress: (p) => { if (p.phase === "downloading" && !filled) { filled = true; writeFileSync(dir + "/filler", Buffer.alloc(12 << 20, 1)); } }});
    result = {ok: true, got};
} catch (err) { result = {ok: false, name: err.name, code: err.code, message: err.message}; }
await new Promise((r) => setTimeout(r, 2500)); // stray ipull writes settle
process.stdout.write(JSON.stringify({...result, files: readdirSync(dir).sort()}) + "\\n");
`);
        // not spawnSync: the server answering the child lives in this process
        const run = await runChild("unshare", ["-m", "sh", "-c", `mount -t tmpfs -o size=20m tmpfs "$1" && exec "$2" "$3" "$1" "$4"`,
            "sh", mnt, process.execPath, child, server.url], 60_000);
        assert.equal(run.status, 0, `child failed (an unhandled ENOSPC rejection would crash it): ${run.stderr}`);
        const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}") as {ok: boolean; name: string; code: string; message: string; files: string[]};
        assert.deepEqual({ok: out.ok, name: out.name, code: out.code}, {ok: false, name: "NoSpaceError", code: "no_space"}, out.message);
        assert.match(out.message, /^disk full while downloading Big\.gguf/, "the free-space check passed; the disk filled during the download");
        assert.deepEqual(out.files, ["filler"]);
    });
});

describe("ProgressBar", () => {
    const sink = (isTTY: boolean): {isTTY: boolean; columns: number; out: string[]; write(s: string): void} =>
        ({isTTY, columns: 120, out: [] as string[], write(s: string) { this.out.push(s); }});
    const at = (bytes: number, phase: ProvisionProgress["phase"] = "downloading"): ProvisionProgress =>
        ({phase, downloadedBytes: bytes, totalBytes: 1000 * 1024 * 1024, bytesPerSecond: 10 * 1024 * 1024});

    it("renders percent, sizes, rate and ETA", () => {
        assert.equal(renderProgress(at(250 * 1024 * 1024), "m.gguf"), "m.gguf  downloading  25.0%  250 MiB / 1000 MiB  10 MiB/s  ETA 1m15s");
        assert.match(renderProgress(at(500 * 1024 * 1024), "m", 10), /\[#####-----\] {2}50\.0%/);
    });
    it("writes plain lines every few seconds when not a terminal, a redrawn line on one", () => {
        let now = 0;
        const plain = sink(false);
        const bar = new ProgressBar({stream: plain, label: "m", lineIntervalMs: 5000, now: () => now});
        for (let i = 0; i < 100; i++) { now += 100; bar.update(at(i * 1024 * 1024)); }
        bar.update(at(1000 * 1024 * 1024, "verifying"));
        bar.finish("ready");
        // the first, one 5 s later, the phase change, the final message
        assert.equal(plain.out.length, 4, plain.out.join(""));
        assert.match(plain.out[1] ?? "", /^m {2}downloading {2}5\.0%/);
        assert.ok(plain.out.every((l) => l.endsWith("\n") && !l.includes("\r")));

        const tty = sink(true);
        const bar2 = new ProgressBar({stream: tty, label: "m", now: () => now});
        for (let i = 0; i < 10; i++) { now += 150; bar2.update(at(i * 1024 * 1024)); }
        bar2.finish();
        assert.ok(tty.out.slice(0, -1).every((l) => l.startsWith("\r")) && tty.out.at(-1) === "\n");
        assert.ok(tty.out.some((l) => l.includes("[")), "a wide terminal shows the bar");
    });
});

