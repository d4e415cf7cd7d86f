// The job store across a restart (src/jobs/store.ts): what it remembers of messages it refused.
import {describe, it} from "node:test";
import assert from "node:assert/strict";
import {mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import type {Logger} from "../../src/log.js";
import {jobKey, JobStore} from "../../src/jobs/store.js";

const quiet: Logger = {error() {}, warn() {}, info() {}, debug() {}, child: () => quiet};

void describe("job store: refused messages across a restart", () => {
    void it("a message hash remembered without a job (a refused retained request) is still known after a restart", async () => {
        const dir = mkdtempSync(join(tmpdir(), "qe-store-"));
        try {
            const key = jobKey("retained-1", "r/retained-1");
            const first = new JobStore({log: quiet, dir});
            await first.start();
            first.rememberHash("h-retained", key);
            assert.equal(first.keyForHash("h-retained"), key);
            await first.stop();

            const second = new JobStore({log: quiet, dir});
            await second.start();
            assert.equal(second.keyForHash("h-retained"), key, "the refused message's hash survives the restart");
            assert.equal(second.lookup(key)?.state, "done");
            assert.equal(second.stats().pending, 0, "nothing to replay");
            await second.stop();
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });

    void it("a hash remembered under a key already answered adds no record and keeps the answered one", async () => {
        const dir = mkdtempSync(join(tmpdir(), "qe-store-"));
        try {
            const key = jobKey("id-1", "r/id-1");
            const first = new JobStore({log: quiet, dir});
            await first.start();
            first.accept(key, {id: "id-1"}, "h-request");
            first.finish(key);
            const records = first.stats().journalRecords;
            first.rememberHash("h-other", key);
            assert.equal(first.stats().journalRecords, records);
            await first.stop();

            const second = new JobStore({log: quiet, dir});
            await second.start();
            assert.equal(second.keyForHash("h-request"), key);
            assert.deepEqual(second.lookup(key) && {state: second.lookup(key)!.state, hash: second.lookup(key)!.hash}, {state: "done", hash: "h-request"});
            await second.stop();
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
});
