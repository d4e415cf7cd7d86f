/**
 * The JSON Schema subset of tool and action parameters (issue 20, docs/ACTIONS.md).
 *
 * A tool's `parameters` does two jobs: node-llama-cpp turns it into a grammar that constrains the call the
 * model writes, and the daemon validates the arguments it got before anything acts on them (a device action
 * publishes only arguments that pass). The subset is what node-llama-cpp 3.21.1's grammar builder understands
 * (type, properties, required, additionalProperties, items, prefixItems, min/maxItems, enum, const, oneOf,
 * min/maxLength, format date|time|date-time) plus two checks the grammar cannot make and the validator does
 * (minimum, maximum); annotations (title, default, examples, $schema, $comment) are accepted and ignored.
 * Anything else (pattern, $ref, anyOf, ...) is refused with its name, rather than silently not enforced.
 *
 * Pure and bounded: schemas are first checked against the request limits (src/mqtt/bounded-json.ts), so the
 * recursion below is at most that deep.
 */
import {JSON_SCHEMA_LIMITS, jsonSchemaLimitProblem} from "../mqtt/bounded-json.js";

const TYPES = ["string", "number", "integer", "boolean", "null", "object", "array"] as const;
const SCALAR_TYPES = new Set<string>(["string", "number", "integer", "boolean", "null"]);
const ANNOTATIONS = new Set(["description", "title", "default", "examples", "$schema", "$comment"]);
/** Keywords enforced by the validator only (the grammar cannot express them). */
const VALIDATOR_ONLY = new Set(["minimum", "maximum"]);
const KEYWORDS: Readonly<Record<string, ReadonlySet<string>>> = {
    string: new Set(["type", "minLength", "maxLength", "format"]),
    number: new Set(["type", "minimum", "maximum"]),
    integer: new Set(["type", "minimum", "maximum"]),
    boolean: new Set(["type"]),
    null: new Set(["type"]),
    object: new Set(["type", "properties", "required", "additionalProperties", "minProperties", "maxProperties"]),
    array: new Set(["type", "items", "prefixItems", "minItems", "maxItems"])
};
const FORMATS = new Set(["date", "time", "date-time"]);

type Schema = Record<string, unknown>;
const isObject = (v: unknown): v is Schema => typeof v === "object" && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
const isScalar = (v: unknown): boolean => v === null || ["string", "number", "boolean"].includes(typeof v);

/**
 * Why `schema` is not a parameters schema this daemon can constrain and check, as a sentence naming the place
 * (`at`), or null when it is one.
 */
export function schemaProblem(schema: unknown, at: string): string | null {
    const limit = jsonSchemaLimitProblem(schema, JSON_SCHEMA_LIMITS);
    if (limit !== null) return `${at} ${limit}`;
    return subsetProblem(schema, at);
}

function subsetProblem(schema: unknown, at: string): string | null {
    if (!isObject(schema)) return `${at} must be a JSON Schema object`;
    const keys = Object.keys(schema).filter((k) => !ANNOTATIONS.has(k));
    if (schema.description !== undefined && typeof schema.description !== "string") return `${at}.description must be a string`;
    if ("const" in schema) {
        const extra = keys.find((k) => k !== "const");
        if (extra !== undefined) return `${at}: "const" cannot be combined with ${JSON.stringify(extra)}`;
        return isScalar(schema.const) ? null : `${at}.const must be a string, number, boolean or null`;
    }
    if ("enum" in schema) {
        const extra = keys.find((k) => k !== "enum" && k !== "type");
        if (extra !== undefined) return `${at}: "enum" cannot be combined with ${JSON.stringify(extra)}`;
        const values = schema.enum;
        if (!Array.isArray(values) || values.length === 0 || !values.every(isScalar))
            return `${at}.enum must be a non-empty array of strings, numbers, booleans or null`;
        return null;
    }
    if ("oneOf" in schema) {
        const extra = keys.find((k) => k !== "oneOf");
        if (extra !== undefined) return `${at}: "oneOf" cannot be combined with ${JSON.stringify(extra)}`;
        if (!Array.isArray(schema.oneOf) || schema.oneOf.length === 0) return `${at}.oneOf must be a non-empty array of schemas`;
        for (const [i, s] of schema.oneOf.entries()) {
            const p = subsetProblem(s, `${at}.oneOf[${i}]`);
            if (p !== null) return p;
        }
        return null;
    }
    const type = schema.type;
    const types = Array.isArray(type) ? type : [type];
    if (type === undefined) return `${at} needs a "type" (one of ${TYPES.join(", ")}), or "enum", "const" or "oneOf"`;
    if (types.length === 0 || !types.every((t) => typeof t === "string" && (TYPES as readonly string[]).includes(t)))
        return `${at}.type must be one of ${TYPES.join(", ")}${Array.isArray(type) ? " (each)" : ""}`;
    if (types.length > 1 && !types.every((t) => SCALAR_TYPES.has(t as string)))
        return `${at}.type: a list of types may only name ${[...SCALAR_TYPES].join(", ")}`;
    const allowed = new Set(types.flatMap((t) => types.length > 1 ? ["type"] : [...KEYWORDS[t as string]!]));
    const unknown = keys.find((k) => !allowed.has(k));
    if (unknown !== undefined)
        return `${at} uses ${JSON.stringify(unknown)}, which is not supported for type ${JSON.stringify(type)}; ` +
            `supported: ${[...allowed].join(", ")} (and description)`;
    for (const k of ["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"])
        if (schema[k] !== undefined && !isCount(schema[k])) return `${at}.${k} must be a whole number >= 0`;
    for (const k of ["minimum", "maximum"])
        if (schema[k] !== undefined && (typeof schema[k] !== "number" || !Number.isFinite(schema[k]))) return `${at}.${k} must be a number`;
    if (schema.format !== undefined && !FORMATS.has(schema.format as string)) return `${at}.format must be one of ${[...FORMATS].join(", ")}`;
    if (schema.properties !== undefined) {
        if (!isObject(schema.properties)) return `${at}.properties must be an object of schemas`;
        for (const [name, s] of Object.entries(schema.properties)) {
            const p = subsetProblem(s, `${at}.properties.${name}`);
            if (p !== null) return p;
        }
    }
    if (schema.required !== undefined) {
        const props = isObject(schema.properties) ? schema.properties : {};
        if (!Array.isArray(schema.required) || !schema.required.every((r) => typeof r === "string"))
            return `${at}.required must be an array of property names`;
        const missing = schema.required.find((r: string) => !Object.hasOwn(props, r));
        if (missing !== undefined) return `${at}.required names ${JSON.stringify(missing)}, which is not in ${at}.properties`;
    }
    if (schema.additionalProperties !== undefined && typeof schema.additionalProperties !== "boolean") {
        const p = subsetProblem(schema.additionalProperties, `${at}.additionalProperties`);
        if (p !== null) return p;
    }
    if (schema.items !== undefined) {
        const p = subsetProblem(schema.items, `${at}.items`);
        if (p !== null) return p;
    }
    if (schema.prefixItems !== undefined) {
        if (!Array.isArray(schema.prefixItems)) return `${at}.prefixItems must be an array of schemas`;
        for (const [i, s] of schema.prefixItems.entries()) {
            const p = subsetProblem(s, `${at}.prefixItems[${i}]`);
            if (p !== null) return p;
        }
    }
    return null;
}

/**
 * The schema as node-llama-cpp's grammar builder takes it: annotations other than descriptions and the
 * validator-only keywords removed. For a schema schemaProblem accepted.
 */
export function grammarSchema(schema: unknown): unknown {
    if (Array.isArray(schema)) return schema.map(grammarSchema);
    if (!isObject(schema)) return schema;
    const out: Schema = {};
    for (const [k, v] of Object.entries(schema)) {
        if ((ANNOTATIONS.has(k) && k !== "description") || VALIDATOR_ONLY.has(k)) continue;
        // enum, const and required hold values or names, not schemas
        out[k] = k === "properties" && isObject(v) ? Object.fromEntries(Object.entries(v).map(([n, s]) => [n, grammarSchema(s)]))
            : ["items", "additionalProperties", "oneOf", "prefixItems"].includes(k) ? grammarSchema(v) : v;
    }
    return out;
}

const typeOf = (v: unknown): string => v === null ? "null" : Array.isArray(v) ? "array" : typeof v === "number" && Number.isInteger(v) ? "integer" : typeof v;
const shown = (v: unknown): string => {
    const t = typeOf(v);
    return t === "string" ? `a string of ${(v as string).length} characters` : t === "object" || t === "array" ? `an ${t}` : `${t === "integer" ? "a number" : `a ${t}`}`;
};

/**
 * Why `value` does not satisfy `schema` (a schema schemaProblem accepted), as a sentence naming the place, or
 * null when it does. Never quotes a string value (arguments may carry prompt text); numbers and names are shown.
 */
export function validateAgainstSchema(schema: unknown, value: unknown, at = "arguments"): string | null {
    if (!isObject(schema)) return null;
    if ("const" in schema) return value === schema.const ? null : `${at} must be ${JSON.stringify(schema.const)}`;
    if ("enum" in schema) {
        const options = schema.enum as unknown[];
        return options.some((o) => o === value) ? null
            : `${at} must be one of ${options.slice(0, 10).map((o) => JSON.stringify(o)).join(", ")}${options.length > 10 ? ", ..." : ""}`;
    }
    if ("oneOf" in schema) {
        const matches = (schema.oneOf as unknown[]).filter((s) => validateAgainstSchema(s, value, at) === null).length;
        return matches >= 1 ? null : `${at} matches none of the ${(schema.oneOf as unknown[]).length} schemas of its oneOf`;
    }
    const types = (Array.isArray(schema.type) ? schema.type : [schema.type]) as string[];
    const actual = typeOf(value);
    const typeOk = types.includes(actual) || (actual === "integer" && types.includes("number"));
    if (!typeOk) return `${at} must be ${types.map((t) => t === "integer" ? "a whole number" : `a${/^[aeiou]/.test(t) ? "n" : ""} ${t}`).join(" or ")} (got ${shown(value)})`;
    if (typeof value === "number") {
        if (!Number.isFinite(value)) return `${at} must be a finite number`;
        if (typeof schema.minimum === "number" && value < schema.minimum) return `${at} must be at least ${schema.minimum} (got ${value})`;
        if (typeof schema.maximum === "number" && value > schema.maximum) return `${at} must be at most ${schema.maximum} (got ${value})`;
        return null;
    }
    if (typeof value === "string") {
        const length = [...value].length;
        if (typeof schema.minLength === "number" && length < schema.minLength) return `${at} must have at least ${schema.minLength} characters (got ${length})`;
        if (typeof schema.maxLength === "number" && length > schema.maxLength) return `${at} must have at most ${schema.maxLength} characters (got ${length})`;
        if (schema.format !== undefined && !formatOk(schema.format as string, value)) return `${at} must be a ${schema.format as string} (ISO 8601)`;
        return null;
    }
    if (Array.isArray(value)) {
        if (typeof schema.minItems === "number" && value.length < schema.minItems) return `${at} must have at least ${schema.minItems} items (got ${value.length})`;
        if (typeof schema.maxItems === "number" && value.length > schema.maxItems) return `${at} must have at most ${schema.maxItems} items (got ${value.length})`;
        const prefix: unknown[] = Array.isArray(schema.prefixItems) ? schema.prefixItems : [];
        for (const [i, item] of (value as unknown[]).entries()) {
            const s: unknown = i < prefix.length ? prefix[i] : schema.items;
            const p = s === undefined ? null : validateAgainstSchema(s, item, `${at}[${i}]`);
            if (p !== null) return p;
        }
        return null;
    }
    if (isObject(value)) {
        const props = isObject(schema.properties) ? schema.properties : {};
        for (const name of (schema.required as string[] | undefined) ?? [])
            if (!Object.hasOwn(value, name)) return `${at}.${name} is required`;
        const count = Object.keys(value).length;
        if (typeof schema.minProperties === "number" && count < schema.minProperties) return `${at} must have at least ${schema.minProperties} properties`;
        if (typeof schema.maxProperties === "number" && count > schema.maxProperties) return `${at} must have at most ${schema.maxProperties} properties`;
        for (const [name, v] of Object.entries(value)) {
            const where = /^[A-Za-z0-9_-]{1,64}$/.test(name) ? `${at}.${name}` : `${at} (a property of ${name.length} characters)`;
            if (Object.hasOwn(props, name)) {
                const p = validateAgainstSchema(props[name], v, where);
                if (p !== null) return p;
            } else if (schema.additionalProperties === false) {
                return `${where} is not a parameter (allowed: ${Object.keys(props).slice(0, 16).join(", ") || "none"})`;
            } else if (isObject(schema.additionalProperties)) {
                const p = validateAgainstSchema(schema.additionalProperties, v, where);
                if (p !== null) return p;
            }
        }
    }
    return null;
}

function formatOk(format: string, value: string): boolean {
    const date = /^\d{4}-\d{2}-\d{2}$/;
    const time = /^\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/;
    if (format === "date") return date.test(value) && !Number.isNaN(Date.parse(value));
    if (format === "time") return time.test(value);
    if (format === "date-time") {
        const [d, t] = value.split(/[Tt ]/);
        return d !== undefined && t !== undefined && date.test(d) && time.test(t) && !Number.isNaN(Date.parse(value));
    }
    return true;
}
