/**
 * A route's three admission limits, checked together and taken only when all pass: at most one
 * request per source topic per `minIntervalMs`; at most `maxPerMinute` for the route as a whole
 * (many source topics must not add up to a flood); and, for a retained reply, at most
 * `maxRetainedTopics` distinct reply topics (each one stays on the broker until deleted). Pure: the
 * clock is the message's receive time.
 */

export interface RouteLimitSettings {
    /** one request per source topic per this many ms; 0: no limit */
    minIntervalMs: number;
    /** requests per rolling minute for the whole route; 0: no limit */
    maxPerMinute: number;
    /** the reply is published retained */
    retain: boolean;
    /** distinct retained reply topics the route may create */
    maxRetainedTopics: number;
}

export type LimitRefusal =
    | {limit: "source"; reason: string}
    | {limit: "route"; reason: string}
    | {limit: "retained"; reason: string};

const WINDOW_MS = 60_000;
/** Source topics remembered for minIntervalMs; the oldest go first beyond this. */
const MAX_TRACKED_TOPICS = 10_000;

export class RouteLimiter {
    private readonly settings: RouteLimitSettings;
    /** source topic -> when its last request was admitted (oldest first) */
    private readonly lastBySource = new Map<string, number>();
    /** admission times within the rolling minute, oldest first; at most maxPerMinute entries */
    private readonly recent: number[] = [];
    /** retained reply topics created since start (a restart forgets them: the cap is per run) */
    private readonly retainedTopics = new Set<string>();

    public constructor(settings: RouteLimitSettings) {
        this.settings = settings;
    }

    /** Null when a request from `source` answered on `replyTopic` may go now (and the limits are taken), else which limit refused. */
    public admit(source: string, replyTopic: string, now: number): LimitRefusal | null {
        const s = this.settings;
        const last = this.lastBySource.get(source);
        if (s.minIntervalMs > 0 && last !== undefined && now >= last && now - last < s.minIntervalMs)
            return {limit: "source", reason: `a request from this source topic was routed less than ${s.minIntervalMs} ms ago`};
        while (this.recent.length > 0 && now - (this.recent[0] ?? now) >= WINDOW_MS) this.recent.shift();
        if (s.maxPerMinute > 0 && this.recent.length >= s.maxPerMinute)
            return {limit: "route", reason: `the route already routed ${s.maxPerMinute} requests in the last minute (maxPerMinute)`};
        if (s.retain && !this.retainedTopics.has(replyTopic) && this.retainedTopics.size >= s.maxRetainedTopics)
            return {limit: "retained", reason: `the route already keeps retained answers on ${s.maxRetainedTopics} topics (reply.maxRetainedTopics)`};
        this.take(source, replyTopic, now);
        return null;
    }

    /** How many distinct retained reply topics the route has used. */
    public retainedTopicCount(): number {
        return this.retainedTopics.size;
    }

    private take(source: string, replyTopic: string, now: number): void {
        const s = this.settings;
        if (s.maxPerMinute > 0) this.recent.push(now);
        if (s.retain) this.retainedTopics.add(replyTopic);
        if (s.minIntervalMs <= 0) return;
        // Re-insert so the map stays ordered oldest first, then forget topics whose interval has passed.
        this.lastBySource.delete(source);
        this.lastBySource.set(source, now);
        for (const [topic, at] of this.lastBySource) {
            if (now - at < s.minIntervalMs && this.lastBySource.size <= MAX_TRACKED_TOPICS) break;
            this.lastBySource.delete(topic);
        }
    }
}
