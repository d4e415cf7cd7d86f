/**
 * Topic layout of the MQTT contract and the validation of every topic that comes from outside
 * (config, request fields, MQTT v5 properties). Pure: no I/O.
 */
import {ConfigError} from "../errors.js";
import {LONE_SURROGATE} from "../util/text.js";

export interface TopicLayout {
    base: string;
    device: string;
    /** `{base}/{device}/request`: requests for this device. */
    request: string;
    /** `{base}/{device}/cancel`: `{"id"}` cancels a queued or running request. */
    cancel: string;
    /** `{base}/{device}/response`: replies when the request names no reply topic. */
    response: string;
    /** `{base}/{device}/status`, retained; also the will topic. */
    status: string;
    /** `{base}/{device}/info`, retained. */
    info: string;
    /** `{base}/{device}/health`. */
    health: string;
    /** `{base}/{device}/health/refresh`: any message makes the device publish a health snapshot now (`qwen-edge status`). */
    healthRefresh: string;
    /** `{base}/fleet/health/refresh`: the same for every device. */
    fleetHealthRefresh: string;
    /** `$share/{group}/{base}/fleet/request`, or null when the fleet group is "" (fleet queue off). */
    fleetRequest: string | null;
    /** Home Assistant device discovery: `{prefix}/device/{device}/config`; throws ConfigError for a bad prefix. */
    discovery: (prefix: string) => string;
}

/** MQTT caps a topic at 65535 bytes of UTF-8 (a two-byte length prefix). */
const MAX_TOPIC_BYTES = 65535;
const MAX_DEVICE_ID_LENGTH = 64;
const FALLBACK_DEVICE_ID = "qwen-edge";
/** Home Assistant's discovery accepts only these in a node id, and the id is one topic level. */
const DEVICE_ID_PATTERN = /^[a-z0-9_-]{1,64}$/;
/** A share name must not contain "/", "+" or "#"; a plain alphabet keeps it printable too. */
const FLEET_GROUP_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
// MQTT forbids U+0000 and says topics SHOULD NOT carry the C0/C1 control characters; Mosquitto 2.0
// disconnects a publisher that sends one (tab included).
// eslint-disable-next-line no-control-regex
const CONTROL_CHAR = /[\u0001-\u001f\u007f-\u009f]/;
/**
 * Unicode noncharacters: U+FDD0..U+FDEF and the last two code points of every plane. Mosquitto 2.0
 * takes a topic holding one as a malformed packet and disconnects the publisher (measured:
 * test/integration/broker-topics.test.ts), so one such reply topic would cut the daemon off.
 */
const NONCHARACTER = new RegExp(`[\\uFDD0-\\uFDEF${Array.from({length: 17}, (_, plane) =>
    `\\u{${(plane * 0x10000 + 0xfffe).toString(16)}}\\u{${(plane * 0x10000 + 0xffff).toString(16)}}`).join("")}]`, "u");

export function topicLayout(base: string, device: string, fleetGroup: string): TopicLayout {
    const baseProblem = validatePublishTopic(base);
    if (baseProblem !== null)
        throw new ConfigError(`mqtt.baseTopic ${JSON.stringify(base)} ${baseProblem}`);
    if (!DEVICE_ID_PATTERN.test(device))
        throw new ConfigError(`device.id ${JSON.stringify(device)} must be 1 to ${MAX_DEVICE_ID_LENGTH} characters of a-z, 0-9, _ and -`);
    if (fleetGroup !== "" && !FLEET_GROUP_PATTERN.test(fleetGroup))
        throw new ConfigError(`mqtt.fleetGroup ${JSON.stringify(fleetGroup)} must be empty (fleet queue off) or 1 to 64 characters of A-Z, a-z, 0-9, _, . and -`);

    const own = `${base}/${device}`;
    return {
        base,
        device,
        request: `${own}/request`,
        cancel: `${own}/cancel`,
        response: `${own}/response`,
        status: `${own}/status`,
        info: `${own}/info`,
        health: `${own}/health`,
        healthRefresh: `${own}/health/refresh`,
        fleetHealthRefresh: `${base}/fleet/health/refresh`,
        fleetRequest: fleetGroup === "" ? null : `$share/${fleetGroup}/${base}/fleet/request`,
        discovery: (prefix: string): string => {
            const problem = validatePublishTopic(prefix);
            if (problem !== null)
                throw new ConfigError(`Home Assistant discovery prefix ${JSON.stringify(prefix)} ${problem}`);
            return `${prefix}/device/${device}/config`;
        }
    };
}

/**
 * A device id from a hostname: lowercase a-z, 0-9, _ and -, runs of anything else as one "-",
 * no leading or trailing "-", at most 64 characters, and "qwen-edge" if nothing is left.
 */
export function sanitizeDeviceId(hostname: string): string {
    const id = hostname
        .normalize("NFKD")
        .replace(/[\u0300-\u036f]/g, "") // "café" -> "cafe" rather than "caf"
        .toLowerCase()
        .replace(/[^a-z0-9_-]+/g, "-")
        .replace(/-{2,}/g, "-")
        .replace(/^-+|-+$/g, "")
        .slice(0, MAX_DEVICE_ID_LENGTH)
        .replace(/-+$/, "");
    return id === "" ? FALLBACK_DEVICE_ID : id;
}

/** Problems every topic or filter can have, whatever its use. */
function basicProblem(topic: string): string | null {
    if (topic === "")
        return "is empty";
    if (Buffer.byteLength(topic, "utf8") > MAX_TOPIC_BYTES)
        return `is longer than ${MAX_TOPIC_BYTES} bytes`;
    if (topic.includes("\u0000"))
        return "contains a NUL character";
    if (CONTROL_CHAR.test(topic))
        return "contains a control character";
    if (LONE_SURROGATE.test(topic))
        return "contains an unpaired UTF-16 surrogate";
    if (NONCHARACTER.test(topic))
        return "contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), which brokers refuse";
    return null;
}

/**
 * Whether we may publish to `topic` (a reply topic from a request, or a configured one).
 * Returns null when it is fine, else why not, as a phrase that completes "the topic …"
 * (e.g. `contains the wildcard "+"`). Stricter than MQTT on purpose: empty levels and a leading
 * "$" are legal or broker-reserved there, but from user input they are almost always mistakes.
 */
export function validatePublishTopic(topic: string): string | null {
    const basic = basicProblem(topic);
    if (basic !== null)
        return basic;
    if (topic.includes("+"))
        return "contains the wildcard \"+\"";
    if (topic.includes("#"))
        return "contains the wildcard \"#\"";
    if (topic.startsWith("$"))
        return "starts with \"$\" (reserved for the broker)";
    if (topic.split("/").some((level) => level === ""))
        return "has an empty level (a leading, trailing or double \"/\")";
    return null;
}

/**
 * Whether `filter` is a valid subscription filter: "+" only as a whole level, "#" only as the
 * whole last level, `$share/{group}/{filter}` with a proper group. Empty levels are allowed here,
 * as in MQTT: a filter describes topics that other clients publish.
 * Returns null when valid, else why not (a phrase, as in validatePublishTopic).
 */
export function validateTopicFilter(filter: string): string | null {
    const basic = basicProblem(filter);
    if (basic !== null)
        return basic;
    const shared = splitShared(filter);
    if (shared === "malformed")
        return "must be $share/{group}/{filter} with a non-empty group and filter";
    if (shared !== null && /[+#]/.test(shared.group))
        return "has a $share group containing \"+\" or \"#\"";
    const levels = (shared?.filter ?? filter).split("/");
    for (const [i, level] of levels.entries()) {
        if (level.includes("#") && (level !== "#" || i !== levels.length - 1))
            return "uses \"#\" other than as the whole last level";
        if (level.includes("+") && level !== "+")
            return "uses \"+\" other than as a whole level";
    }
    return null;
}

/** `$share/{group}/{filter}` split up; null when not shared; "malformed" when shared but incomplete. */
function splitShared(filter: string): {group: string; filter: string} | null | "malformed" {
    if (!filter.startsWith("$share/"))
        return null;
    const rest = filter.slice("$share/".length);
    const slash = rest.indexOf("/");
    if (slash <= 0 || slash === rest.length - 1)
        return "malformed";
    return {group: rest.slice(0, slash), filter: rest.slice(slash + 1)};
}

/**
 * MQTT topic matching: "+" matches one level (an empty one too), a trailing "#" matches the parent
 * level and everything below it, and a topic starting with "$" is not matched by a filter starting
 * with a wildcard. A `$share/{group}/` prefix is ignored, as the broker matches the rest.
 * An invalid filter matches nothing; a topic with a wildcard matches nothing.
 */
export function topicMatches(filter: string, topic: string): boolean {
    if (validateTopicFilter(filter) !== null || topic === "" || /[+#]/.test(topic))
        return false;
    const shared = splitShared(filter);
    const effective = shared === null || shared === "malformed" ? filter : shared.filter;
    const filterLevels = effective.split("/");
    const topicLevels = topic.split("/");
    if (topic.startsWith("$") && (filterLevels[0] === "+" || filterLevels[0] === "#"))
        return false;

    for (const [i, level] of filterLevels.entries()) {
        if (level === "#")
            return true;
        const topicLevel = topicLevels[i];
        if (topicLevel === undefined)
            return false;
        if (level !== "+" && level !== topicLevel)
            return false;
    }
    return filterLevels.length === topicLevels.length;
}
