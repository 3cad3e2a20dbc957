// caduceus-bench-kernels: what the kernels of one device achieve against what the device can do.
//
//   (a) memory: device copy bandwidth (memcpy D2D, counted as bytes read + written) and a
//       read-only streaming pass;
//   (b) the bf16 GEMM peak (cuBLAS on CUDA, kernels::cpu::Linear on the CPU), big square;
//   (c) every kernel alone at the shapes a step uses: achieved bytes/s against (a);
//   (d) a synthetic decode step of the whole model (every layer's calls in the order
//       worker/model/llama_model.cc makes them, random bf16 weights generated on the device) for
//       several batch sizes -> tokens/s; batch 1 against the HBM bound (weight bytes / copy
//       bandwidth, goal >= 80%); on CUDA also the same step replayed as one CUDA graph;
//   (e) a prefill step -> tokens/s and useful FLOP/s against (b) (goal >= 60%).
//
// Output: a human table, then one JSON object as the last line of stdout (docs/cuda.md lists the
// fields; tools/gpu-bench.sh checks them). `--dry-run` runs the same structure on the CPU kernels
// with a tiny model in seconds: that is what CI runs, so the GPU path cannot rot unnoticed.
//
// The pieces: bench_support.{h,cc} (shape, options, helpers), kernel_measurements.cc (c),
// step_measurements.cc (d, e); the devices are cpu_device.cc and cuda_device.cu.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/bench/bench_support.h"

namespace caduceus::kernels::bench {
namespace {

int Main(int argc, char** argv) {
  const auto wall_start = std::chrono::steady_clock::now();
  Options o;
  const int parsed = ParseArgs(argc, argv, &o);
  if (parsed != 0) return parsed == 1 ? 0 : 2;
  if (o.dry_run && !o.device.empty() && o.device != "cpu") {
    std::fprintf(stderr, "caduceus-bench-kernels: --dry-run runs on the CPU (--device cpu)\n");
    return 2;
  }
#ifdef CADUCEUS_BENCH_WITH_CUDA
  const char* default_device = "cuda";
#else
  const char* default_device = "cpu";
#endif
  if (o.dry_run) o.device = "cpu";
  if (o.device.empty()) o.device = default_device;

  std::unique_ptr<Device> device;
  if (o.device == "cpu") {
    device = MakeCpuDevice();
  } else if (o.device == "cuda" || o.device.rfind("cuda:", 0) == 0) {
    int64_t ordinal = 0;
    if (o.device.size() > 5 && !ParseInt(o.device.substr(5), &ordinal)) {
      std::fprintf(stderr, "caduceus-bench-kernels: bad device '%s'\n", o.device.c_str());
      return 2;
    }
    std::string error;
    device = MakeCudaDevice(static_cast<int>(ordinal), &error);
    if (device == nullptr) {
      std::fprintf(stderr, "caduceus-bench-kernels: %s\n", error.c_str());
      return 2;
    }
  } else {
    std::fprintf(stderr, "caduceus-bench-kernels: unknown device '%s' (cpu, cuda[:K])\n",
                 o.device.c_str());
    return 2;
  }
  Device& d = *device;
  const bool cuda = d.info().kind == "cuda";
  if (o.shape.empty()) o.shape = cuda ? "llama3-8b" : "tiny";
  ApplyDefaults(cuda, &o);
  Shape shape_with_options = o.shape == "llama3-8b" ? Llama3_8B() : Tiny();
  shape_with_options.kv_dtype = o.kv_dtype;
  const Shape& s = shape_with_options;

  Context c(d, o, s);
  c.report.Set("schema", "caduceus-bench-kernels/1");
  c.report.Set("mode", o.dry_run ? "dry-run" : "full");
  {
    Json dev = Json::Object();
    dev.Set("kind", d.info().kind);
    dev.Set("name", d.info().name);
    dev.Set("memory_bytes", d.info().memory_bytes);
    dev.Set("cache_bytes", d.info().cache_bytes);
    for (const auto& [k, v] : d.info().strings) dev.Set(k, v);
    for (const auto& [k, v] : d.info().numbers) dev.Set(k, v);
    c.report.Set("device", std::move(dev));
    Json shape = Json::Object();
    shape.Set("name", s.name);
    shape.Set("hidden", s.hidden);
    shape.Set("q_heads", s.q_heads);
    shape.Set("kv_heads", s.kv_heads);
    shape.Set("head_dim", s.head_dim);
    shape.Set("intermediate", s.inter);
    shape.Set("vocab", s.vocab);
    shape.Set("layers", s.layers);
    shape.Set("block_size", s.block_size);
    shape.Set("tp", 1);
    shape.Set("weight_bytes_per_step", s.WeightBytesPerStep());
    shape.Set("kv_cache_dtype", KvDtypeName(s.kv_dtype));
    shape.Set("kv_bytes_per_token_layer", s.KvBytesPerTokenLayer());
    c.report.Set("shape", std::move(shape));
  }
  std::printf("caduceus-bench-kernels: %s, %s, model %s, %s KV cache%s\n", d.info().kind.c_str(),
              d.info().name.c_str(), s.name.c_str(), KvDtypeName(s.kv_dtype),
              o.dry_run ? " (dry run)" : "");
  std::fflush(stdout);

  // (a) memory
  {
    const size_t bytes = static_cast<size_t>(o.copy_bytes);
    const Timing copy = TimeWork(d, d.MakeCopy(bytes), o);
    const Timing read = TimeWork(d, d.MakeStreamRead(bytes), o);
    c.copy_bw = 2.0 * bytes / copy.best_s;
    Json j = Json::Object();
    j.Set("buffer_bytes", bytes);
    j.Set("copy_d2d_bytes_per_s", c.copy_bw);
    j.Set("copy_d2d_note", "bytes read + bytes written per second");
    j.Set("stream_read_bytes_per_s", bytes / read.best_s);
    // Host -> device: a plain pageable copy (a naive loader) and the worker's weight-loading path
    // (pinned, double-buffered staging). Wall time, best of 3. The host buffer is resident, so
    // this is the transfer path alone; a cold load also reads the disk inside the staging memcpy.
    double pageable_bw = 0, staged_bw = 0;
    if (void* dev = d.Alloc(bytes)) {
      std::vector<char> host(bytes, 1);
      auto best = [&](auto&& copy) {
        double best_s = 1e30;
        for (int r = 0; r < 3; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          copy();
          best_s = std::min(
              best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        return best_s;
      };
      d.Synchronize();
      pageable_bw = bytes / best([&] { d.Upload(dev, host.data(), bytes); });
      staged_bw = bytes / best([&] { d.UploadStaged(dev, host.data(), bytes); });
      d.Free(dev);
      j.Set("h2d_pageable_bytes_per_s", pageable_bw);
      j.Set("h2d_staged_bytes_per_s", staged_bw);
    }
    c.report.Set("memory", std::move(j));
    c.table.push_back("memory (" + HumanBytes(bytes) + " buffers)");
    c.table.push_back("  copy D2D      " + Fmt("%8.1f", c.copy_bw / 1e9) +
                      " GB/s (read + written)");
    c.table.push_back("  stream read   " + Fmt("%8.1f", bytes / read.best_s / 1e9) + " GB/s");
    if (staged_bw > 0) {
      c.table.push_back("  H2D pageable  " + Fmt("%8.1f", pageable_bw / 1e9) + " GB/s");
      c.table.push_back("  H2D staged    " + Fmt("%8.1f", staged_bw / 1e9) +
                        " GB/s (weight loading path)");
    }
    c.Save();
  }
  // (b) GEMM peak
  {
    std::string impl;
    const Timing t = TimeWork(d, d.MakeGemm(o.gemm_size, &impl), o);
    const double flops = 2.0 * o.gemm_size * o.gemm_size * o.gemm_size;
    c.gemm_peak = flops / t.best_s;
    Json j = Json::Object();
    j.Set("impl", impl);
    j.Set("size", o.gemm_size);
    j.Set("seconds", t.best_s);
    j.Set("flops_per_s", c.gemm_peak);
    c.report.Set("gemm", std::move(j));
    c.table.push_back("gemm peak: " + Fmt("%.3g", c.gemm_peak / 1e12) + " TFLOP/s (" + impl +
                      ", " + std::to_string(o.gemm_size) + "^3)");
    c.Save();
  }
  // (c) kernels
  c.report.Set("kernels", Json::Array());
  if (o.micro) {
    char header[160];
    std::snprintf(header, sizeof(header), "  %-17s %-34s %10s %9s %7s %9s", "kernel", "shape",
                  "us/call", "GB/s", "%copy", "TFLOP/s");
    c.table.push_back("kernels (best loop; bytes = minimal traffic; %copy = of copy bandwidth)");
    c.table.push_back(header);
    MeasureElementwise(c);
    MeasureAttention(c);
    MeasureLinear(c);
    c.Save();
  }
  // (d), (e) synthetic steps; prefill first so the Linear workspace reaches its largest size
  // before any decode step is captured into a graph.
  MeasureModelSteps(c);
  c.report.Set("wall_s", std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                       wall_start).count());
  c.Save();
  for (const std::string& line : c.table) std::printf("%s\n", line.c_str());
  std::printf("%s\n", c.report.Dump().c_str());
  return 0;
}

}  // namespace
}  // namespace caduceus::kernels::bench

int main(int argc, char** argv) { return caduceus::kernels::bench::Main(argc, argv); }
