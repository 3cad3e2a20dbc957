#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "worker/sampling/logits_math.h"

namespace caduceus::sampling {
namespace {

absl::Status NoFiniteLogit() { return absl::InvalidArgumentError("every logit is NaN or -inf"); }

using internal::IdValue;

// Top-p gathering starts with tokens within kInitialSpread nats (after temperature) of the best
// one and doubles the spread until the candidates provably hold the nucleus. Beyond kFullSpread
// every weight is 0 in FastExpNonPositive, so that step takes the whole row.
constexpr float kInitialSpread = 8.0f;
constexpr float kFullSpread = 88.0f;
// Slack on the collection threshold so rounding in (z - max) / T never drops a token that the
// exact min-p test would keep; extra candidates are filtered exactly afterwards.
constexpr float kThresholdSlack = 1e-3f;

struct Candidate {
  int32_t id;
  float scaled;    // (z - max) / T, <= 0
  float weight;    // exp(scaled), unnormalized probability, max token has exactly 1
  int32_t bucket;  // scratch for KeepNucleus
};

// (probability desc, id asc): the deterministic order used for top-k ties and top-p prefixes.
bool Better(const Candidate& a, const Candidate& b) {
  return a.scaled != b.scaled ? a.scaled > b.scaled : a.id < b.id;
}

struct Scratch {
  std::vector<float> penalized;
  std::vector<float> raw_block_max;
  std::vector<float> z_block_max;
  std::vector<float> block_select;
  std::vector<double> bucket_mass;
  std::vector<double> block_sums;
  std::vector<IdValue> collected;
  std::vector<Candidate> candidates;
  std::vector<IdValue> top;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The row the truncation works on: logits after penalties, with per-block maxima.
struct Row {
  std::span<const float> z;
  std::span<const float> block_max;
  float max;
  float temperature;
  float inv_t;
};

// Which truncations are active; a top_k at or above the vocabulary size is no truncation.
struct Truncation {
  bool top_k_on, top_p_on, min_p_on;
  int32_t top_k;
  float top_p, min_p;
  static Truncation From(const SamplingParams& p, size_t vocab) {
    return Truncation{p.top_k > 0 && static_cast<size_t>(p.top_k) < vocab,
                      p.top_p<1.0f, p.min_p> 0.0f, p.top_k, p.top_p, p.min_p};
  }
  bool any() const { return top_k_on || top_p_on || min_p_on; }
};

void CollectCandidates(const Row& row, float threshold, Scratch* scratch, double* mass) {
  // A huge temperature can push the threshold to -inf; -inf logits must stay out regardless.
  threshold = std::max(threshold, -FLT_MAX);
  const size_t count =
      internal::CollectAtLeast(row.z, row.block_max, threshold, &scratch->collected);
  std::vector<Candidate>& candidates = scratch->candidates;
  candidates.resize(count);
  // Summed in double: the mass decides whether the candidates provably hold the nucleus.
  double total = 0.0;
  for (size_t i = 0; i < count; ++i) {
    const IdValue& iv = scratch->collected[i];
    // Clamped so that KeepNucleus's bucket arithmetic never sees -inf (z - max can overflow).
    const float scaled = std::max((iv.value - row.max) * row.inv_t, -FLT_MAX);
    const float weight = internal::FastExpNonPositive(scaled);
    candidates[i] = Candidate{iv.id, scaled, weight, 0};
    total += weight;
  }
  *mass = total;
}

// Fills scratch->candidates with every token above some threshold, chosen so that the set
// provably contains all tokens that can survive the truncation (a superset is fine: the exact
// filters run afterwards on candidates only).
void GatherCandidates(const Row& row, const Truncation& t, double z_total, Scratch* scratch) {
  double mass = 0.0;
  // Below the min-p cutoff nothing survives (slack absorbs rounding in (z - max) / T).
  const float min_p_threshold =
      t.min_p_on ? row.max - (-std::log(t.min_p) + kThresholdSlack) * row.temperature : -FLT_MAX;
  if (t.top_k_on) {
    // At least k tokens reach the k-th largest block maximum (each of those blocks holds one),
    // so that threshold captures the whole top-k set, ties included, after a selection over
    // only vocab / 64 values.
    float threshold = -FLT_MAX;
    const size_t k = static_cast<size_t>(t.top_k);
    if (k <= row.block_max.size()) {
      scratch->block_select.assign(row.block_max.begin(), row.block_max.end());
      std::nth_element(scratch->block_select.begin(), scratch->block_select.begin() + (k - 1),
                       scratch->block_select.end(), std::greater<float>());
      threshold = std::max(scratch->block_select[k - 1], -FLT_MAX);  // -inf: take all finite
    }
    // Top-p after top-k needs the whole top-k mass, so min-p may only raise the bar alone.
    if (!t.top_p_on) threshold = std::max(threshold, min_p_threshold);
    CollectCandidates(row, threshold, scratch, &mass);
    return;
  }
  if (!t.top_p_on) {  // min-p only
    CollectCandidates(row, min_p_threshold, scratch, &mass);
    return;
  }
  // Top-p (with or without min-p): widen a spread below the best token until the candidates
  // hold top_p of the total mass; with min-p, stopping at its cutoff is always enough.
  for (float spread = kInitialSpread;; spread *= 2.0f) {
    const bool full = !(spread < kFullSpread);
    float threshold = full ? -FLT_MAX : row.max - (spread + kThresholdSlack) * row.temperature;
    const bool at_min_p = threshold <= min_p_threshold;
    threshold = std::max(threshold, min_p_threshold);
    CollectCandidates(row, threshold, scratch, &mass);
    if (full || at_min_p || mass >= t.top_p * z_total) return;
    // Far short of the nucleus means a flat row: re-collecting step by step would cost more
    // than taking everything at once.
    if (mass < 0.5 * t.top_p * z_total) spread = kFullSpread;
  }
}

// Keeps the smallest prefix, in (probability desc, id asc) order, whose mass reaches `limit`.
// No full sort: candidates are bucketed by scaled logit (monotone buckets), whole buckets are
// kept while their running mass stays below the limit, and only the bucket where the limit
// falls is sorted. Kept candidates end up in a deterministic (not sorted) order.
void KeepNucleus(double limit, Scratch* scratch) {
  std::vector<Candidate>& c = scratch->candidates;
  const size_t n = c.size();
  if (n <= 64) {
    std::sort(c.begin(), c.end(), Better);
    double cumulative = 0.0;
    size_t keep = 0;
    while (keep < n && cumulative < limit) cumulative += c[keep++].weight;
    c.resize(std::max<size_t>(keep, 1));
    return;
  }
  constexpr int kBuckets = 1024;
  float lowest = 0.0f;
  for (const Candidate& x : c) lowest = std::min(lowest, x.scaled);
  // Bucket 0 holds the best tokens; the index is monotone in `scaled`, so every token of an
  // earlier bucket precedes every token of a later one in (probability desc, id asc) order.
  const float per_unit = lowest < 0.0f ? (kBuckets - 1) / -lowest : 0.0f;
  auto bucket_of = [per_unit](const Candidate& x) {
    return std::min(kBuckets - 1, static_cast<int>(-x.scaled * per_unit));
  };
  std::vector<double>& mass = scratch->bucket_mass;
  mass.assign(kBuckets, 0.0);
  for (Candidate& x : c) {
    x.bucket = bucket_of(x);
    mass[x.bucket] += x.weight;
  }
  double cumulative = 0.0;
  int boundary = 0;
  while (boundary < kBuckets - 1 && cumulative + mass[boundary] < limit) {
    cumulative += mass[boundary++];
  }
  // [kept buckets | boundary bucket | dropped], then cut inside the sorted boundary bucket.
  auto kept_end = std::partition(c.begin(), c.end(),
                                 [boundary](const Candidate& x) { return x.bucket < boundary; });
  auto boundary_end = std::partition(
      kept_end, c.end(), [boundary](const Candidate& x) { return x.bucket == boundary; });
  std::sort(kept_end, boundary_end, Better);
  auto cut = kept_end;
  while (cut != boundary_end && cumulative < limit) cumulative += (cut++)->weight;
  c.erase(cut == c.begin() ? c.begin() + 1 : cut, c.end());
}

// Inverse-CDF draw over candidates in their current order; zero-weight entries are never chosen.
int32_t DrawFromCandidates(std::span<const Candidate> candidates, double u) {
  double total = 0.0;
  for (const Candidate& c : candidates) total += c.weight;
  const double target = u * total;
  double cumulative = 0.0;
  int32_t last_positive = candidates.front().id;
  for (const Candidate& c : candidates) {
    if (c.weight <= 0.0f) continue;
    cumulative += c.weight;
    last_positive = c.id;
    if (cumulative > target) return c.id;
  }
  return last_positive;  // only reachable through rounding with u close to 1
}

// Inverse-CDF draw over the whole row (no truncation): pick the block from the per-block sums,
// then scan inside it.
// `block_sums` / `total` must come from SumExp over this row with the same max and inv_t.
int32_t DrawFromRow(const Row& row, double u, const std::vector<double>* block_sums, double total,
                    int32_t fallback) {
  const std::span<const float> z = row.z;
  const double target = u * total;
  double cumulative = 0.0;
  for (size_t b = 0; b < block_sums->size(); ++b) {
    const double block = (*block_sums)[b];
    if (cumulative + block <= target) {
      cumulative += block;
      continue;
    }
    const size_t end = std::min(z.size(), (b + 1) * internal::kBlock);
    int32_t last_positive = -1;
    for (size_t i = b * internal::kBlock; i < end; ++i) {
      const float w =
          internal::FastExpNonPositive((internal::Sanitize(z[i]) - row.max) * row.inv_t);
      if (w <= 0.0f) continue;
      cumulative += w;
      last_positive = static_cast<int32_t>(i);
      if (cumulative > target) return last_positive;
    }
    if (last_positive >= 0) return last_positive;  // block sum vs sequential sum rounding
  }
  return fallback;
}

}  // namespace

absl::StatusOr<SampleResult> GreedyResult(int32_t token) {
  if (token < 0) return NoFiniteLogit();
  return SampleResult{token, 0.0f, {}};
}

SequenceSampler::SequenceSampler(SamplingParams params, std::span<const int32_t> prompt_ids)
    : params_(params), params_status_(params.Validate()) {
  if (params_.repetition_penalty != 1.0f) seen_ids_.insert(prompt_ids.begin(), prompt_ids.end());
}

void SequenceSampler::Accept(int32_t token) {
  if (params_.repetition_penalty != 1.0f) seen_ids_.insert(token);
  if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
    ++generated_counts_[token];
  }
}

void SequenceSampler::ApplyPenalties(std::span<const float> logits, std::vector<float>* out) const {
  const size_t vocab = logits.size();
  out->resize(vocab);
  float* dst = out->data();
  const float* src = logits.data();
#pragma omp simd
  for (size_t i = 0; i < vocab; ++i) dst[i] = internal::Sanitize(src[i]);

  auto in_vocab = [vocab](int32_t id) { return id >= 0 && static_cast<size_t>(id) < vocab; };
  const float rep = params_.repetition_penalty;
  for (int32_t id : seen_ids_) {
    if (!in_vocab(id)) continue;
    float& v = dst[id];
    v = v > 0.0f ? v / rep : v * rep;
  }
  // Two separate subtractions, as vLLM does, so results match it bit for bit.
  for (const auto& [id, count] : generated_counts_) {
    if (!in_vocab(id)) continue;
    float& v = dst[id];
    v -= params_.frequency_penalty * static_cast<float>(count);
    v -= params_.presence_penalty;
  }
  // Then the logit bias (OpenAI: added to the logits before sampling). A -inf logit stays -inf:
  // a bias cannot bring back a token the model rules out.
  for (const auto& [id, bias] : params_.logit_bias) {
    if (in_vocab(id)) dst[id] += bias;
  }
  // A penalty can push FLT_MAX to +inf (e.g. dividing by a penalty < 1); keep the row finite.
  for (int32_t id : seen_ids_) {
    if (in_vocab(id)) dst[id] = internal::Sanitize(dst[id]);
  }
  for (const auto& [id, count] : generated_counts_) {
    if (in_vocab(id)) dst[id] = internal::Sanitize(dst[id]);
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (in_vocab(id)) dst[id] = internal::Sanitize(dst[id]);
  }
}

absl::StatusOr<SampleResult> SequenceSampler::Sample(std::span<const float> logits,
                                                     uint64_t step) const {
  if (!params_status_.ok()) return params_status_;
  if (logits.empty()) return absl::InvalidArgumentError("logits must not be empty");
  if (logits.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary too large: ", logits.size()));
  }
  Scratch& scratch = ThreadScratch();

  // Raw log-sum-exp: logprobs always describe the unmodified model distribution.
  const float raw_max = internal::BlockMax(logits, &scratch.raw_block_max);
  if (raw_max == -std::numeric_limits<float>::infinity()) {
    return NoFiniteLogit();
  }
  // z = the row after penalties. Without penalties it is the raw row itself (no copy).
  const bool penalized =
      (params_.HasPenalties() && (!seen_ids_.empty() || !generated_counts_.empty())) ||
      !params_.logit_bias.empty();
  // The raw sum of exponentials: for logprobs, and reused by a draw at temperature 1 without
  // penalties. A greedy draw without logprobs skips this pass over the row.
  const bool draw_reuses_raw_sum =
      !params_.IsGreedy() && !penalized && params_.temperature == 1.0f;
  const bool need_raw_sum =
      !params_.skip_logprob || params_.top_logprobs > 0 || draw_reuses_raw_sum;
  const double raw_sum =
      need_raw_sum ? internal::SumExp(logits, raw_max, 1.0f, &scratch.block_sums) : 0.0;
  // Logprob = (x - max) - log(sum): subtracting max first keeps precision near FLT_MAX.
  const double log_raw_sum = need_raw_sum ? std::log(raw_sum) : 0.0;
  std::span<const float> z = logits;
  std::span<const float> z_block_max = scratch.raw_block_max;
  float z_max = raw_max;
  if (penalized) {
    ApplyPenalties(logits, &scratch.penalized);
    z = scratch.penalized;
    z_max = internal::BlockMax(z, &scratch.z_block_max);
    z_block_max = scratch.z_block_max;
    if (z_max == -std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError("every logit is -inf after penalties");
    }
  }
  const int32_t argmax = internal::FirstIndexOf(z, z_block_max, z_max);

  int32_t token = argmax;
  if (!params_.IsGreedy()) {
    const double u = internal::UniformDraw(params_.seed, step);
    const float inv_t = 1.0f / params_.temperature;
    const Row row{z, z_block_max, z_max, params_.temperature, inv_t};
    const Truncation trunc = Truncation::From(params_, logits.size());
    if (!trunc.any()) {
      // At temperature 1 without penalties the raw pass already summed this very row.
      double total = raw_sum;
      if (penalized || params_.temperature != 1.0f) {
        total = internal::SumExp(z, z_max, inv_t, &scratch.block_sums);
      }
      token = DrawFromRow(row, u, &scratch.block_sums, total, argmax);
    } else {
      // Top-p without top-k is relative to the whole (tempered) distribution.
      double z_total = 0.0;
      if (trunc.top_p_on && !trunc.top_k_on) {
        z_total = (!penalized && params_.temperature == 1.0f)
                      ? raw_sum
                      : internal::SumExp(z, z_max, inv_t, nullptr);
      }
      std::vector<Candidate>& candidates = scratch.candidates;
      GatherCandidates(row, trunc, z_total, &scratch);
      if (trunc.top_k_on && candidates.size() > static_cast<size_t>(trunc.top_k)) {
        const auto kth = candidates.begin() + (trunc.top_k - 1);
        std::nth_element(candidates.begin(), kth, candidates.end(), Better);
        candidates.resize(trunc.top_k);
      }
      if (trunc.top_p_on) {
        double mass = z_total;
        if (trunc.top_k_on) {
          mass = 0.0;
          for (const Candidate& c : candidates) mass += c.weight;
        }
        KeepNucleus(trunc.top_p * mass, &scratch);
      }
      if (trunc.min_p_on) {
        // The best token has weight exactly 1, so min_p * p_max is simply min_p.
        const float min_p = trunc.min_p;
        std::erase_if(candidates, [min_p](const Candidate& c) { return c.weight < min_p; });
      }
      token = candidates.empty() ? argmax : DrawFromCandidates(candidates, u);
    }
  }

  SampleResult result;
  result.token = token;
  if (!params_.skip_logprob) {
    result.logprob = static_cast<float>(static_cast<double>(internal::Sanitize(logits[token])) -
                                        raw_max - log_raw_sum);
  }
  if (params_.top_logprobs > 0) {
    internal::TopN(logits, scratch.raw_block_max, params_.top_logprobs, &scratch.top);
    result.top_logprobs.reserve(scratch.top.size());
    for (const IdValue& iv : scratch.top) {
      result.top_logprobs.push_back(TokenLogprob{
          iv.id, static_cast<float>(static_cast<double>(iv.value) - raw_max - log_raw_sum)});
    }
  }
  return result;
}

}  // namespace caduceus::sampling
