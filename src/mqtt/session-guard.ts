/**
 * Two clients with one client id take the session from each other: the broker closes the older
 * connection as the newer one connects, forever (two Pis both named "raspberrypi" run two daemons
 * with the device id "raspberrypi"). Mosquitto 2.0 closes the taken-over connection without a
 * DISCONNECT packet (no reason code 0x8E reaches the client), so the guard looks for evidence:
 * - another qwen-edge daemon: every status message carries its sender's instance id, and the daemon
 *   subscribes to its own status topic; a live status from another instance is proof;
 * - anyone else: connections the broker closes silently (no error, no DISCONNECT) shortly after they
 *   were made, three times within two minutes.
 * Then the device is `degraded` with a reason naming the client id and what to change, and reconnects
 * slowly instead of flapping every second. The condition clears after a connection lasts five minutes
 * with no new evidence. Pure: the daemon feeds it events and applies its verdicts.
 */
import type {LinkClose} from "./link.js";

export interface SessionGuardDeps {
    clientId: string;
    deviceId: string;
    /** this process's instance id, as it goes into every status message */
    instance: string;
    /**
     * the instance ids of earlier runs on this state directory: their statuses may still be queued in our
     * persistent session (a run killed right after publishing one never received its own copy), and they are
     * this device, not another one
     */
    earlierInstances?: readonly string[];
    /** the verdict changed: a reason (degrade, reconnect no sooner than `backoffMs`) or null (clear) */
    onVerdict: (reason: string | null, backoffMs: number) => void;
    now?: () => number;
}

/** A silent close this soon after connecting counts as a takeover sign. */
const SHORT_CONNECTION_MS = 30_000;
const WINDOW_MS = 120_000;
const SIGNS = 3;
/** Reconnect no sooner than this while another client holds our id. */
export const TAKEOVER_BACKOFF_MS = 60_000;
/** A connection that lasts this long with no new evidence clears the condition. */
const CLEAR_AFTER_MS = 300_000;

export class SessionGuard {
    private readonly deps: SessionGuardDeps;
    private silentCloses: number[] = [];
    private reason: string | null = null;
    private lastEvidenceAt = 0;

    public constructor(deps: SessionGuardDeps) {
        this.deps = deps;
    }

    private now(): number {
        return this.deps.now?.() ?? Date.now();
    }

    /** A status message on the device's own status topic (`retained`: an old value sent on subscribe). */
    public onStatus(payload: Buffer, retained: boolean): void {
        if (retained) return; // our own previous run left it; only a live one proves another daemon now
        let other: {instance?: unknown; host?: unknown} | null;
        try {
            other = JSON.parse(payload.toString("utf8")) as {instance?: unknown; host?: unknown};
        } catch {
            return;
        }
        if (typeof other?.instance !== "string" || other.instance === this.deps.instance) return;
        if (this.deps.earlierInstances?.includes(other.instance) === true) return;
        const host = typeof other.host === "string" ? ` on host ${other.host}` : "";
        this.evidence(`another qwen-edge daemon${host} uses the device id ${this.deps.deviceId} and the client id ${this.deps.clientId}: `
            + "the broker hands the session to whichever connected last; give each device its own device.id");
    }

    /** How a connection ended (MqttLink). */
    public onClose(close: LinkClose): void {
        if (!close.silent || close.connectedMs > SHORT_CONNECTION_MS) return;
        const now = this.now();
        this.silentCloses = [...this.silentCloses.filter((at) => now - at <= WINDOW_MS), now];
        if (this.silentCloses.length >= SIGNS) {
            this.evidence(`the broker closed this device's connection ${this.silentCloses.length} times in ${Math.round(WINDOW_MS / 60_000)} minutes `
                + `without a reason: another client is probably using the client id ${this.deps.clientId}; give each device its own device.id `
                + "(or mqtt.clientId), and see deploy/mosquitto/ to stop others from taking it");
        }
    }

    /** A connection is up: if it lasted (checked at the next close or tick), the condition clears. */
    public onConnected(): void {
        this.tick();
    }

    /** Clears the condition once no evidence came for a while. Call it now and then (e.g. each health tick). */
    public tick(): void {
        if (this.reason !== null && this.now() - this.lastEvidenceAt >= CLEAR_AFTER_MS) {
            this.reason = null;
            this.silentCloses = [];
            this.deps.onVerdict(null, 0);
        }
    }

    private evidence(reason: string): void {
        this.lastEvidenceAt = this.now();
        if (reason === this.reason) return;
        this.reason = reason;
        this.deps.onVerdict(reason, TAKEOVER_BACKOFF_MS);
    }
}
