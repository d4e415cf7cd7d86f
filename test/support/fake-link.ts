/**
 * An in-memory stand-in for MqttLink's publishing side, for unit tests of telemetry parts that only
 * publish (the real link is covered by the integration tests against Mosquitto).
 */
import {Writable} from "node:stream";
import type {IClientPublishOptions} from "mqtt";
import {createLogger, type Logger} from "../../src/log.js";
import type {LinkStats} from "../../src/mqtt/link.js";

export interface Published {
    topic: string;
    payload: string;
    options: IClientPublishOptions;
}

export class FakeLink {
    public connected = true;
    public readonly published: Published[] = [];

    public async publish(topic: string, payload: string | Buffer, options: IClientPublishOptions = {}): Promise<void> {
        this.published.push({topic, payload: payload.toString(), options});
    }

    public publishIfConnected(topic: string, payload: string, options: IClientPublishOptions = {}): void {
        if (this.connected) this.published.push({topic, payload, options});
    }

    public stats(): LinkStats {
        return {connected: this.connected, connects: 1, reconnects: 0, lastConnectAt: new Date().toISOString(), lastError: null};
    }

    public on(topic: string): Published[] {
        return this.published.filter((p) => p.topic === topic);
    }

    /** Waits until a message on `topic` matches, polling; the error names what it waited for. */
    public async waitFor(what: string, topic: string, match: (p: Published) => boolean = () => true, timeoutMs = 5000): Promise<Published> {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const found = this.on(topic).find(match);
            if (found) return found;
            if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} on ${topic}; got ${this.published.map((p) => p.topic).join(", ")}`);
            await new Promise((r) => setTimeout(r, 10));
        }
    }
}

/** A logger that keeps its lines (JSON objects) instead of printing them. */
export function memoryLogger(): {log: Logger; lines: Array<Record<string, unknown>>} {
    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({
        write(chunk: Buffer, _encoding, callback): void {
            for (const line of chunk.toString("utf8").split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
            callback();
        }
    });
    return {log: createLogger("debug", stream), lines};
}
