// Tree-walking evaluator for parsed templates. One Evaluator per render: it owns the variable
// scopes and the output buffer, and reads the immutable AST shared by all renders.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/text/jinja/ast.h"
#include "router/text/jinja/value.h"

namespace caduceus::text::jinja {

// Outputs longer than this are refused: a template bug (or `'x' * 10**9`) must not take the
// router's memory with it.
inline constexpr size_t kMaxOutputBytes = size_t{64} << 20;

class Evaluator {
 public:
  // `now` and `zone` feed strftime_now(); tests pin them.
  Evaluator(const ValueDict& context, absl::Time now, absl::TimeZone zone);

  absl::Status Run(const Body& body, std::string& out);

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Exec(const Body& body);
  absl::Status ExecFor(const Stmt& stmt);
  absl::Status ExecSet(const Stmt& stmt);
  absl::Status BindLoopTargets(const Stmt& stmt, const Value& item);
  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalBinary(const Expr& e, const Value& lhs, const Value& rhs);
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::StatusOr<Value> EvalSubscript(const Expr& e, const Value& object, const Value& index);
  absl::StatusOr<Value> EvalSlice(const Expr& e);
  absl::Status EvalArgs(const Expr& e, size_t first, std::vector<Value>& args,
                        std::vector<std::pair<std::string, Value>>* kwargs);

  const Value& Lookup(const std::string& name) const;
  absl::Status Error(const Expr& e, std::string_view what) const;

  std::vector<absl::flat_hash_map<std::string, Value>> scopes_;
  const Value undefined_;
  absl::Time now_;
  absl::TimeZone zone_;
  std::string* out_ = nullptr;
  Flow flow_ = Flow::kNormal;
};

}  // namespace caduceus::text::jinja
