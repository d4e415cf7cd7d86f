/**
 * This run's instance id, recorded in the state directory for the runs after it (src/mqtt/session-guard.ts:
 * a status of an earlier run of this device, still queued in its persistent session, is not another daemon).
 */
import {mkdirSync, readFileSync, writeFileSync} from "node:fs";
import {join} from "node:path";
import type {Logger} from "../log.js";

/**
 * The instance ids of the last runs on this state directory (newest last), and this one recorded for the
 * next: a status of an earlier run that was still queued in the session is ours, not another daemon's.
 */
export function rememberInstance(stateDir: string, instance: string, log: Logger): string[] {
    const path = join(stateDir, "instances");
    let earlier: string[] = [];
    try {
        earlier = readFileSync(path, "utf8").split("\n").filter((l) => /^[0-9a-f]{12}$/.test(l));
    } catch {
        // the first run here, or an unreadable state directory: nothing earlier is known
    }
    try {
        mkdirSync(stateDir, {recursive: true});
        writeFileSync(path, [...earlier.slice(-7), instance].join("\n") + "\n");
    } catch (err) {
        log.debug("instance id not recorded", {message: (err as Error).message});
    }
    return earlier;
}
