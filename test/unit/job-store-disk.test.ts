// The job store on a small full disk (src/jobs/store.ts): a real tmpfs in a private mount namespace, so
// it needs root (CI runs as root) and is skipped otherwise. The store runs in a child process inside it.
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {spawnSync} from "node:child_process";
import {mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";

const STORE = new URL("../../src/jobs/store.js", import.meta.url).href;
const root = process.getuid?.() === 0;

/**
 * Runs `body` (an async function body, `store` and `fs`, `dir` in scope) against a JobStore whose
 * directory is on a fresh tmpfs of `sizeKiB`; returns what the body returns, as JSON.
 */
function onTmpfs(sizeKiB: number, compactEvery: number, body: string): unknown {
    const mnt = mkdtempSync(join(tmpdir(), "qe-store-disk-"));
    try {
        const script = `
            import * as fs from "node:fs";
            import {JobStore} from ${JSON.stringify(STORE)};
            const dir = process.argv[1] + "/state";
            const quiet = {info() {}, warn() {}, error() {}, debug() {}};
            const store = new JobStore({log: quiet, dir, compactEvery: ${compactEvery}});
            await store.start();
            const result = await (async () => { ${body} })();
            process.stdout.write(JSON.stringify(result));`;
        const r = spawnSync("unshare", ["-m", "sh", "-c", `mount -t tmpfs -o size=${sizeKiB}k tmpfs "$1" && exec "$2" --input-type=module -e "$3" "$1"`,
            "sh", mnt, process.execPath, script], {encoding: "utf8", timeout: 20_000});
        assert.equal(r.status, 0, `the store's child failed: ${r.error?.message ?? r.stderr}`);
        return JSON.parse(r.stdout) as unknown;
    } finally {
        rmSync(mnt, {recursive: true, force: true});
    }
}

void describe("job store on a full disk", {skip: root ? false : "needs root to mount a tmpfs in a private mount namespace (unshare -m)"}, () => {
    void it("a compaction that fails for want of space leaves no partial copy taking the space appends need", () => {
        // Two 24 KiB pending requests (a compacted copy needs ~48 KiB); a filler leaves ~32 KiB free, room for
        // a 6 KiB record but not the copy; the 4th record makes the store compact, which fails.
        const result = onTmpfs(256, 4, `
            const big = (id) => ({id, prompt: "x".repeat(24 * 1024)});
            store.accept("a", big("a"), "ha");
            store.accept("b", big("b"), "hb");
            const s = fs.statfsSync(dir);
            fs.writeFileSync(dir + "/../filler", Buffer.alloc(s.bavail * s.bsize - 32 * 1024));
            store.accept("c", {id: "c", prompt: "small"}, "hc");
            store.finish("c"); // the 4th record: compaction, which cannot fit
            const leftover = fs.existsSync(dir + "/jobs.journal.tmp") ? fs.statSync(dir + "/jobs.journal.tmp").size : null;
            let accepted = true;
            try {
                store.accept("d", {id: "d", prompt: "y".repeat(6 * 1024)}, "hd"); // more than a page: it needs free space
            } catch (err) {
                accepted = err.message;
            }
            return {leftover, accepted, pending: store.stats().pending, unavailable: store.stats().unavailable};`);
        assert.deepEqual(result, {leftover: null, accepted: true, pending: 3, unavailable: null});
    });
});
