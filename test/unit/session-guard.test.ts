/**
 * The session guard's status evidence (src/mqtt/session-guard.ts) and the instance record it is given
 * (src/mqtt/instances.ts): a live status of another instance degrades the device; one of an earlier run
 * on the same state directory (still queued in the persistent session when that run was killed) does not.
 * Found by fault case S03, whose restart after a SIGKILL sometimes came up degraded.
 */
import assert from "node:assert/strict";
import {mkdtempSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {describe, it} from "node:test";
import {rememberInstance} from "../../src/mqtt/instances.js";
import {SessionGuard} from "../../src/mqtt/session-guard.js";
import {memoryLogger} from "../support/fake-link.js";

const status = (instance: string): Buffer => Buffer.from(JSON.stringify({state: "online", since: "2026-12-06T00:00:00Z", instance, host: "pi"}));

describe("SessionGuard and earlier instances", () => {
    it("ignores a queued status of this device's earlier run, and is degraded by another daemon's", () => {
        const verdicts: Array<string | null> = [];
        const guard = new SessionGuard({clientId: "qwen-edge-pi", deviceId: "pi", instance: "bbbbbbbbbbbb", earlierInstances: ["aaaaaaaaaaaa"],
            onVerdict: (reason) => verdicts.push(reason)});
        guard.onStatus(status("aaaaaaaaaaaa"), false);
        guard.onStatus(status("bbbbbbbbbbbb"), false);
        guard.onStatus(status("cccccccccccc"), true);
        assert.deepEqual(verdicts, [], "our earlier run, ourselves, and a retained value prove nothing");
        guard.onStatus(status("cccccccccccc"), false);
        assert.equal(verdicts.length, 1);
        assert.match(verdicts[0] ?? "", /another qwen-edge daemon on host pi uses the device id pi and the client id qwen-edge-pi/);
    });

    it("records each run's instance id in the state directory, the last eight kept", () => {
        const dir = mkdtempSync(join(tmpdir(), "qe-instances-"));
        try {
            const {log} = memoryLogger();
            const ids = Array.from({length: 10}, (_, i) => i.toString(16).padStart(12, "0"));
            const earlier = ids.map((id) => rememberInstance(dir, id, log));
            assert.deepEqual(earlier[0], []);
            assert.deepEqual(earlier[1], [ids[0]]);
            assert.deepEqual(earlier[9], ids.slice(1, 9), "the last eight before this run");
        } finally {
            rmSync(dir, {recursive: true, force: true});
        }
    });
});
