/** Turns raw samples into the summaries, comparisons and target verdicts that are printed and documented. */
import type { ColdBenchResult, ColdVariant, Floor } from '../cold-bench.ts';
import { COLD_VARIANTS, FLOORS } from '../cold-bench.ts';
import type { HttpBenchResult, HttpTarget } from '../http-bench.ts';
import { EBCC_TARGETS, HTTP_TARGETS, WARM_PHASES, type WarmPhase } from '../http-bench.ts';
import type { StageBenchResult, StageSample } from '../stage-bench.ts';
import { bootstrapInterval, median, summarize, type Summary } from './stats.ts';

export const STAGE_PHASES = ['validate', 'allocate', 'dispatch', 'execute', 'persist'] as const;
export type StagePhase = (typeof STAGE_PHASES)[number];
export const COLD_PHASES = ['prepare', 'launch', 'startup', 'invocation', 'other'] as const;

export interface Comparison {
  /** p50(b) / p50(a) or p50(b) - p50(a) */
  p50: number;
  p99: number;
  /** 95% bootstrap interval of the p50 comparison. */
  ci: [number, number];
}

export interface StageModeAnalysis {
  ebcc: Summary;
  ebccResponse: Summary;
  native: Summary;
  ratioDurable: Comparison;
  ratioResponse: Comparison;
  phases: Record<StagePhase, Summary>;
  work: { ebcc: Summary; native: Summary };
}

export interface Target {
  id: string;
  what: string;
  threshold: string;
  measured: string;
  pass: boolean;
}

export interface Analysis {
  stage?: { persistent: StageModeAnalysis; oneshot: StageModeAnalysis };
  http?: {
    targets: Record<HttpTarget, Summary>;
    overHono: Record<'nostage' | 'stage' | 'stage-auth', Comparison>;
    overNodeHttp: Record<'nostage' | 'stage', Comparison>;
    honoOverNodeHttp: Record<'nostage' | 'stage', Comparison>;
    internals: Record<(typeof EBCC_TARGETS)[number], { acquire: Summary; anchor: Summary; rest: Summary }>;
    components: Record<string, Summary>;
    attribution: Record<'ebcc-nostage' | 'ebcc-stage', Record<WarmPhase, Summary> & { total: Summary }>;
  };
  cold?: {
    variants: Record<
      ColdVariant,
      {
        cold: Summary;
        warm: Summary;
        phases: Record<(typeof COLD_PHASES)[number], Summary>;
        anchorLaunch: Summary;
        enclaveCreate: Summary | undefined;
        firstStageRun: Summary | undefined;
        loopMaxDelay: Summary;
        ratio: Comparison;
      }
    >;
    floors: Record<Floor, Summary>;
  };
  targets: Target[];
}

const ratio = (a: readonly number[], b: readonly number[], what: string): Comparison => {
  const sa = summarize(a, what);
  const sb = summarize(b, what);
  return { p50: sb.p50 / sa.p50, p99: sb.p99 / sa.p99, ci: bootstrapInterval(a, b, (ma, mb) => mb / ma) };
};
const difference = (a: readonly number[], b: readonly number[], what: string): Comparison => {
  const sa = summarize(a, what);
  const sb = summarize(b, what);
  return { p50: sb.p50 - sa.p50, p99: sb.p99 - sa.p99, ci: bootstrapInterval(a, b, (ma, mb) => mb - ma) };
};

function stageMode(result: { ebcc: StageSample[]; native: StageSample[] }, mode: string): StageModeAnalysis {
  const pick = (samples: StageSample[], key: keyof StageSample) =>
    samples.map((s) => {
      const v = s[key];
      if (typeof v !== 'number') throw new Error(`stage ${mode}: a sample lacks ${key}`);
      return v;
    });
  const durable = pick(result.ebcc, 'ms');
  const response = pick(result.ebcc, 'responseMs');
  const native = pick(result.native, 'ms');
  const phaseKey: Record<StagePhase, keyof StageSample> = {
    validate: 'validate',
    allocate: 'allocate',
    dispatch: 'dispatch',
    execute: 'execute',
    persist: 'persistMs',
  };
  return {
    ebcc: summarize(durable, `EBCC ${mode}`),
    ebccResponse: summarize(response, `EBCC ${mode} response`),
    native: summarize(native, `native ${mode}`),
    ratioDurable: ratio(native, durable, `stage ${mode}`),
    ratioResponse: ratio(native, response, `stage ${mode}`),
    phases: Object.fromEntries(
      STAGE_PHASES.map((p) => [p, summarize(pick(result.ebcc, phaseKey[p]), `${mode} ${p}`)]),
    ) as Record<StagePhase, Summary>,
    work: {
      ebcc: summarize(pick(result.ebcc, 'workMs'), `${mode} work`),
      native: summarize(pick(result.native, 'workMs'), `${mode} work`),
    },
  };
}

const fmt = (v: number, digits = 2) => v.toFixed(digits);

export function analyze(results: {
  stage?: StageBenchResult;
  http?: HttpBenchResult;
  cold?: ColdBenchResult;
}): Analysis {
  const analysis: Analysis = { targets: [] };
  const { stage, http, cold } = results;
  if (stage) {
    analysis.stage = {
      persistent: stageMode(stage.persistent, 'persistent'),
      oneshot: stageMode(stage.oneshot, 'oneshot'),
    };
    const p = analysis.stage.persistent;
    analysis.targets.push(
      {
        id: 'stage-durable',
        what: 'Stage request through EBCC vs native, persistent stage, p50 ratio (EBCC answer **and** artifacts durable)',
        threshold: '≤ 1.10×',
        measured: `${fmt(p.ratioDurable.p50)}× (${fmt(p.ebcc.p50, 3)} ms vs ${fmt(p.native.p50, 3)} ms; 95% CI ${fmt(p.ratioDurable.ci[0])}–${fmt(p.ratioDurable.ci[1])}×)`,
        pass: p.ratioDurable.p50 <= 1.1,
      },
      {
        id: 'stage-response',
        what: 'Same, counting only until invoke() returns the response (durability still pending)',
        threshold: '≤ 1.10×',
        measured: `${fmt(p.ratioResponse.p50)}× (${fmt(p.ebccResponse.p50, 3)} ms vs ${fmt(p.native.p50, 3)} ms; 95% CI ${fmt(p.ratioResponse.ci[0])}–${fmt(p.ratioResponse.ci[1])}×)`,
        pass: p.ratioResponse.p50 <= 1.1,
      },
    );
  }
  if (http) {
    const s = http.samples;
    const targets = Object.fromEntries(HTTP_TARGETS.map((t) => [t, summarize(s[t], t)])) as Record<
      HttpTarget,
      Summary
    >;
    const internals = Object.fromEntries(
      EBCC_TARGETS.map((t) => {
        const { acquire, anchor } = http.ebccTimings[t];
        const m = median(s[t]);
        return [
          t,
          {
            acquire: summarize(acquire, `${t} acquire`),
            anchor: summarize(anchor, `${t} anchor`),
            rest: summarize(
              // per request: client latency minus what the gateway spent in acquire and the anchor; the
              // records and the client samples are matched by round.
              s[t].map((ms, i) => ms - acquire[i]! - anchor[i]!).map((v) => Math.max(0, v)),
              `${t} rest (median client ${m})`,
            ),
          },
        ];
      }),
    ) as NonNullable<Analysis['http']>['internals'];
    analysis.http = {
      targets,
      overHono: {
        nostage: difference(s['hono-nostage'], s['ebcc-nostage'], 'nostage'),
        stage: difference(s['hono-stage'], s['ebcc-stage'], 'stage'),
        'stage-auth': difference(s['hono-stage'], s['ebcc-stage-auth'], 'stage-auth'),
      },
      overNodeHttp: {
        nostage: difference(s['http-nostage'], s['ebcc-nostage'], 'nostage'),
        stage: difference(s['http-stage'], s['ebcc-stage'], 'stage'),
      },
      honoOverNodeHttp: {
        nostage: difference(s['http-nostage'], s['hono-nostage'], 'nostage'),
        stage: difference(s['http-stage'], s['hono-stage'], 'stage'),
      },
      internals,
      attribution: Object.fromEntries(
        (['ebcc-nostage', 'ebcc-stage'] as const).map((t) => {
          const phases = http.attribution.phases[t];
          const totals = phases.before.map((_, i) => WARM_PHASES.reduce((a, p) => a + phases[p][i]!, 0));
          return [
            t,
            {
              ...Object.fromEntries(WARM_PHASES.map((p) => [p, summarize(phases[p], `${t} ${p}`)])),
              total: summarize(totals, `${t} traced total`),
            },
          ];
        }),
      ) as NonNullable<Analysis['http']>['attribution'],
      components: Object.fromEntries(
        Object.entries(http.components).map(([name, values]) => [
          name,
          summarize(values, `component ${name}`),
        ]),
      ),
    };
    const o = analysis.http.overHono;
    analysis.targets.push(
      {
        id: 'http-nostage',
        what: 'Warm HTTP invocation, anchor calling no stage: EBCC p50 minus plain Hono p50',
        threshold: '≤ +2 ms',
        measured: `+${fmt(o.nostage.p50, 3)} ms (${fmt(targets['ebcc-nostage'].p50, 3)} vs ${fmt(targets['hono-nostage'].p50, 3)} ms; 95% CI +${fmt(o.nostage.ci[0])}–${fmt(o.nostage.ci[1])})`,
        pass: o.nostage.p50 <= 2,
      },
      {
        id: 'http-stage',
        what: 'Warm HTTP invocation, anchor calling one persistent stage: EBCC p50 minus plain Hono p50',
        threshold: '≤ +2 ms',
        measured: `+${fmt(o.stage.p50, 3)} ms (${fmt(targets['ebcc-stage'].p50, 3)} vs ${fmt(targets['hono-stage'].p50, 3)} ms; 95% CI +${fmt(o.stage.ci[0])}–${fmt(o.stage.ci[1])})`,
        pass: o.stage.p50 <= 2,
      },
    );
  }
  if (cold) {
    const variants = Object.fromEntries(
      COLD_VARIANTS.map((v) => {
        const samples = cold.samples[v];
        const coldMs = samples.map((x) => x.coldMs);
        const warmMs = samples.map((x) => x.warmMs);
        const enclave = samples.map((x) => x.enclaveCreateMs);
        const first = samples.map((x) => x.firstStageRunMs).filter((x): x is number => x !== undefined);
        return [
          v,
          {
            cold: summarize(coldMs, `${v} cold`),
            warm: summarize(warmMs, `${v} warm`),
            phases: Object.fromEntries(
              COLD_PHASES.map((p) => [
                p,
                summarize(
                  samples.map((x) => Math.max(0, x.phases[p])),
                  `${v} ${p}`,
                ),
              ]),
            ),
            anchorLaunch: summarize(
              samples.map((x) => x.anchorLaunchMs),
              `${v} anchor launch`,
            ),
            enclaveCreate: enclave.some((x) => x > 0) ? summarize(enclave, `${v} enclave create`) : undefined,
            firstStageRun: first.length ? summarize(first, `${v} first stage run`) : undefined,
            loopMaxDelay: summarize(
              samples.map((x) => x.loopMaxDelayMs),
              `${v} event-loop delay`,
            ),
            ratio: ratio(warmMs, coldMs, `${v} cold/warm`),
          },
        ];
      }),
    ) as NonNullable<Analysis['cold']>['variants'];
    analysis.cold = {
      variants,
      floors: Object.fromEntries(FLOORS.map((f) => [f, summarize(cold.floors[f], `floor ${f}`)])) as Record<
        Floor,
        Summary
      >,
    };
    for (const [v, label] of [
      ['stage', 'Cold start, function with one persistent stage (instance deleted before each round), p50'],
      ['nostage', 'Cold start, anchor only (no persistent stage), p50'],
      ['new-version', 'Cold start of a just-deployed version (empty extraction cache), p50'],
    ] as const) {
      const c = variants[v];
      analysis.targets.push({
        id: `cold-${v}`,
        what: label,
        threshold: '≤ 150 ms',
        measured: `${fmt(c.cold.p50, 1)} ms (p99 ${fmt(c.cold.p99, 1)} ms; warm ${fmt(c.warm.p50, 2)} ms)`,
        pass: c.cold.p50 <= 150,
      });
    }
  }
  return analysis;
}
