// caduceus-make-test-model: writes a synthetic Llama-3 model directory (config, generation
// config, tokenizer files, sharded safetensors + index) exactly per docs/testmodel-spec.md.
//
//   caduceus-make-test-model --preset tiny|small --seed N --out DIR [--tokenizer-dir D]
//                            [--dtype bf16|f32] [--max-shard-bytes B]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/make_test_model/safetensors_writer.h"
#include "tools/make_test_model/test_model_spec.h"

namespace caduceus::testmodel {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string preset;
  uint64_t seed = 0;
  bool have_seed = false;
  std::string out;
  std::string tokenizer_dir;
  std::string dtype = "bf16";
  uint64_t max_shard_bytes = 0;  // 0: the preset's default
};

constexpr int64_t kChunkElements = int64_t{1} << 22;

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
    const std::string val = argv[++i];
    if (arg == "--preset") {
      o.preset = val;
    } else if (arg == "--seed") {
      if (!absl::SimpleAtoi(val, &o.seed)) return absl::InvalidArgumentError("bad --seed " + val);
      o.have_seed = true;
    } else if (arg == "--out") {
      o.out = val;
    } else if (arg == "--tokenizer-dir") {
      o.tokenizer_dir = val;
    } else if (arg == "--dtype") {
      if (val != "bf16" && val != "f32") return absl::InvalidArgumentError("--dtype must be bf16 or f32");
      o.dtype = val;
    } else if (arg == "--max-shard-bytes") {
      if (!absl::SimpleAtoi(val, &o.max_shard_bytes) || o.max_shard_bytes == 0) {
        return absl::InvalidArgumentError("bad --max-shard-bytes " + val);
      }
    } else {
      return absl::InvalidArgumentError("unknown argument " + arg);
    }
  }
  if (o.preset.empty() || !o.have_seed || o.out.empty()) {
    return absl::InvalidArgumentError("--preset, --seed and --out are required");
  }
  if (o.tokenizer_dir.empty()) {
    const char* env = std::getenv("CADUCEUS_TOKENIZER_DIR");
    o.tokenizer_dir = (env != nullptr && *env != '\0') ? env : CADUCEUS_DEFAULT_TOKENIZER_DIR;
  }
  return o;
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

nlohmann::json ConfigJson(const Preset& p) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", p.hidden},
      {"intermediate_size", p.intermediate},
      {"num_hidden_layers", p.layers},
      {"num_attention_heads", p.heads},
      {"num_key_value_heads", p.kv_heads},
      {"head_dim", p.hidden / p.heads},
      {"vocab_size", p.vocab},
      {"max_position_embeddings", 8192},
      {"rope_theta", 500000.0},
      {"rope_scaling", nullptr},
      {"rms_norm_eps", 1e-5},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"initializer_range", 0.02},
      {"pretraining_tp", 1},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"use_cache", true},
      {"bos_token_id", 128000},
      {"eos_token_id", {128001, 128009}},
  };
}

nlohmann::json GenerationConfigJson() {
  return {{"bos_token_id", 128000},
          {"eos_token_id", {128001, 128009}},
          {"do_sample", true},
          {"temperature", 0.6},
          {"top_p", 0.9}};
}

// Hugging Face's sharding rule: tensors in state-dict order, a new shard when the next tensor
// would overflow the current one (a tensor larger than the limit gets a shard of its own).
std::vector<std::vector<size_t>> PlanShards(const std::vector<WriterEntry>& entries,
                                            uint64_t max_bytes) {
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const uint64_t n = EntryBytes(entries[i]);
    if (shards.empty() || (current > 0 && current + n > max_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += n;
  }
  return shards;
}

absl::Status WriteTensorData(const TensorSpec& spec, uint64_t seed, bool f32,
                             SafetensorsWriter& writer, std::vector<uint16_t>& bf16_buf,
                             std::vector<uint32_t>& f32_buf) {
  const TensorGenerator gen(spec, seed);
  const int64_t total = spec.NumElements();
  for (int64_t begin = 0; begin < total; begin += kChunkElements) {
    const int64_t count = std::min(kChunkElements, total - begin);
    gen.FillBf16(begin, count, bf16_buf.data());
    if (f32) {
      // The f32 variant stores the same bf16-representable values, widened exactly.
      for (int64_t k = 0; k < count; ++k) f32_buf[k] = static_cast<uint32_t>(bf16_buf[k]) << 16;
      RETURN_IF_ERROR(writer.Append(f32_buf.data(), count * sizeof(uint32_t)));
    } else {
      RETURN_IF_ERROR(writer.Append(bf16_buf.data(), count * sizeof(uint16_t)));
    }
  }
  return absl::OkStatus();
}

absl::Status Run(const Options& o) {
  ASSIGN_OR_RETURN(const Preset preset, PresetByName(o.preset));
  const std::vector<TensorSpec> specs = TensorSpecs(preset);
  const bool f32 = o.dtype == "f32";
  const std::string st_dtype = f32 ? "F32" : "BF16";
  // Defaults give several shards for both presets so that the index path is always exercised.
  const uint64_t max_shard =
      o.max_shard_bytes != 0 ? o.max_shard_bytes
                             : (o.preset == "tiny" ? (uint64_t{48} << 20) : (uint64_t{1} << 30));

  const fs::path out(o.out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o.out, ": ", ec.message()));
  // Stale shards from an earlier run with a different layout would confuse loaders.
  for (const auto& entry : fs::directory_iterator(out)) {
    const std::string fname = entry.path().filename().string();
    if (fname.rfind("model", 0) == 0 && fname.find(".safetensors") != std::string::npos) {
      fs::remove(entry.path(), ec);
    }
  }

  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(o.tokenizer_dir) / name;
    fs::copy_file(src, out / name, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::NotFoundError(absl::StrCat("cannot copy ", src.string(), " (set --tokenizer-dir): ",
                                              ec.message()));
    }
  }
  RETURN_IF_ERROR(WriteText(out / "config.json", ConfigJson(preset).dump(2) + "\n"));
  RETURN_IF_ERROR(WriteText(out / "generation_config.json", GenerationConfigJson().dump(2) + "\n"));

  std::vector<WriterEntry> entries;
  uint64_t total_size = 0;
  for (const TensorSpec& s : specs) {
    entries.push_back({s.name, st_dtype, s.shape});
    total_size += EntryBytes(entries.back());
  }
  const auto shards = PlanShards(entries, max_shard);
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<uint16_t> bf16_buf(kChunkElements);
  std::vector<uint32_t> f32_buf(f32 ? kChunkElements : 0);
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string fname =
        absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    std::vector<WriterEntry> shard_entries;
    for (size_t idx : shards[s]) {
      shard_entries.push_back(entries[idx]);
      weight_map[entries[idx].name] = fname;
    }
    ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create((out / fname).string(), shard_entries,
                                                            {{"format", "pt"}}));
    for (size_t idx : shards[s]) {
      RETURN_IF_ERROR(WriteTensorData(specs[idx], o.seed, f32, *writer, bf16_buf, f32_buf));
    }
    RETURN_IF_ERROR(writer->Finish());
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total_size}}},
                                {"weight_map", weight_map}};
  RETURN_IF_ERROR(WriteText(out / "model.safetensors.index.json", index.dump(2) + "\n"));
  std::cerr << "wrote " << o.preset << " seed " << o.seed << " (" << o.dtype << ", "
            << shards.size() << " shards, " << total_size << " bytes) to " << o.out << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace caduceus::testmodel

int main(int argc, char** argv) {
  auto opts = caduceus::testmodel::ParseArgs(argc, argv);
  if (!opts.ok()) {
    std::cerr << "caduceus-make-test-model: " << opts.status().message() << "\n"
              << "usage: caduceus-make-test-model --preset tiny|small --seed N --out DIR "
                 "[--tokenizer-dir D] [--dtype bf16|f32] [--max-shard-bytes B]\n";
    return 2;
  }
  const absl::Status st = caduceus::testmodel::Run(*opts);
  if (!st.ok()) {
    std::cerr << "caduceus-make-test-model: " << st << "\n";
    return 1;
  }
  return 0;
}
