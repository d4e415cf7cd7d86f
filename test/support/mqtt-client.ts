/**
 * A test-side MQTT client that records every message on its subscriptions and waits for one that
 * matches, with a timeout whose error names what it waited for.
 */
import mqtt, {type IClientPublishOptions, type MqttClient} from "mqtt";

export interface Received {
    topic: string;
    payload: Buffer;
    text: string;
    json: Record<string, unknown> | null;
    retain: boolean;
    correlationData?: Buffer;
    at: number;
}

export class TestClient {
    public readonly received: Received[] = [];
    private readonly waiters = new Set<() => void>();

    private constructor(public readonly client: MqttClient) {
        client.on("message", (topic, payload, packet) => {
            let json: Record<string, unknown> | null = null;
            try {
                json = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
            } catch {
                json = null;
            }
            const correlationData = packet.properties?.correlationData;
            this.received.push({topic, payload, text: payload.toString("utf8"), json, retain: packet.retain, at: Date.now(),
                ...(correlationData ? {correlationData} : {})});
            for (const w of this.waiters) w();
        });
    }

    /** `persistent`: a session the broker keeps (and queues for) while this client is away, e.g. across a broker restart. */
    public static async connect(url: string, options: {protocolVersion?: 4 | 5; clientId?: string; username?: string; password?: string;
        persistent?: boolean} = {}): Promise<TestClient> {
        const client = await mqtt.connectAsync(url, {protocolVersion: options.protocolVersion ?? 5, reconnectPeriod: 200,
            clientId: options.clientId ?? `test-${Math.random().toString(16).slice(2)}`, clean: options.persistent !== true, connectTimeout: 5000,
            ...(options.persistent === true ? {properties: {sessionExpiryInterval: 3600}} : {}),
            ...(options.username !== undefined ? {username: options.username} : {}),
            ...(options.password !== undefined ? {password: options.password} : {})});
        return new TestClient(client);
    }

    public async subscribe(filter: string): Promise<void> {
        await this.client.subscribeAsync(filter, {qos: 1});
    }

    public async publish(topic: string, payload: string | Buffer, options: IClientPublishOptions = {}): Promise<void> {
        await this.client.publishAsync(topic, payload, {qos: 1, ...options});
    }

    /** Waits for the first received message (past or future) that matches. */
    public async waitFor(what: string, match: (m: Received) => boolean, timeoutMs = 20_000): Promise<Received> {
        const found = this.received.find(match);
        if (found) return found;
        return new Promise((resolve, reject) => {
            const check = (): void => {
                const m = this.received.find(match);
                if (m) {
                    clearTimeout(timer);
                    this.waiters.delete(check);
                    resolve(m);
                }
            };
            const timer = setTimeout(() => {
                this.waiters.delete(check);
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${this.received.length} messages: ` +
                    this.received.slice(-5).map((m) => `${m.topic} ${m.text.slice(0, 200)}`).join(" | ")));
            }, timeoutMs);
            this.waiters.add(check);
        });
    }

    /**
     * Waits until `count` messages match. Counts incrementally: waitFor's predicate runs per stored
     * message, so a count inside it would cost O(n²) per arrival (seconds for a flood of 1,000).
     */
    public async waitForCount(what: string, match: (m: Received) => boolean, count: number, timeoutMs = 30_000): Promise<Received[]> {
        let scanned = 0;
        let matched = 0;
        const enough = (): boolean => {
            for (; scanned < this.received.length; scanned++) if (match(this.received[scanned]!)) matched++;
            return matched >= count;
        };
        if (!enough()) {
            await new Promise<void>((resolve, reject) => {
                const check = (): void => {
                    if (!enough()) return;
                    clearTimeout(timer);
                    this.waiters.delete(check);
                    resolve();
                };
                const timer = setTimeout(() => {
                    this.waiters.delete(check);
                    reject(new Error(`timed out after ${timeoutMs} ms waiting for ${count} x ${what}; ${matched} matched of ${this.received.length} messages`));
                }, timeoutMs);
                this.waiters.add(check);
            });
        }
        return this.received.filter(match);
    }

    public async close(): Promise<void> {
        await this.client.endAsync(true);
    }
}
