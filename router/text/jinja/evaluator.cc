#include "router/text/jinja/evaluator.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "router/text/jinja/builtins.h"

namespace caduceus::text::jinja {
namespace {

// range() may not build lists larger than this; chat templates iterate over messages.
constexpr int64_t kMaxRange = 1'000'000;

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
int64_t FloorMod(int64_t a, int64_t b) {
  int64_t m = a % b;
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

// Python slice bounds for a sequence of `size` elements.
std::vector<size_t> SliceIndices(int64_t size, const Value* start, const Value* stop, int64_t step) {
  auto clamp = [&](const Value* v, int64_t dflt) -> int64_t {
    if (v == nullptr || v->is_none() || v->is_undefined()) return dflt;
    int64_t i = v->AsInt();
    if (i < 0) i += size;
    if (step > 0) return std::clamp<int64_t>(i, 0, size);
    return std::clamp<int64_t>(i, -1, size - 1);
  };
  const int64_t lo = clamp(start, step > 0 ? 0 : size - 1);
  const int64_t hi = clamp(stop, step > 0 ? size : -1);
  std::vector<size_t> out;
  for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) out.push_back(static_cast<size_t>(i));
  return out;
}

}  // namespace

Evaluator::Evaluator(const ValueDict& context, absl::Time now, absl::TimeZone zone)
    : now_(now), zone_(zone) {
  scopes_.emplace_back();
  for (const auto& [k, v] : context) scopes_.back()[k] = v;
}

absl::Status Evaluator::Run(const Body& body, std::string& out) {
  out_ = &out;
  return Exec(body);
}

const Value& Evaluator::Lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return found->second;
  }
  return undefined_;
}

absl::Status Evaluator::Error(const Expr& e, std::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat("template line ", e.line, ": ", std::string(what)));
}

absl::Status Evaluator::Exec(const Body& body) {
  for (const auto& stmt : body) {
    switch (stmt->kind) {
      case StmtKind::kText:
        *out_ += stmt->text;
        break;
      case StmtKind::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*stmt->expr));
        v.AppendTo(*out_);
        break;
      }
      case StmtKind::kIf: {
        size_t branch = 0;
        for (; branch < stmt->conditions.size(); ++branch) {
          ASSIGN_OR_RETURN(Value cond, Eval(*stmt->conditions[branch]));
          if (cond.Truthy()) break;
        }
        if (branch < stmt->bodies.size()) RETURN_IF_ERROR(Exec(stmt->bodies[branch]));
        break;
      }
      case StmtKind::kFor:
        RETURN_IF_ERROR(ExecFor(*stmt));
        break;
      case StmtKind::kSet:
        RETURN_IF_ERROR(ExecSet(*stmt));
        break;
      case StmtKind::kBreak:
        flow_ = Flow::kBreak;
        break;
      case StmtKind::kContinue:
        flow_ = Flow::kContinue;
        break;
    }
    if (out_->size() > kMaxOutputBytes) {
      return absl::InvalidArgumentError(absl::StrCat("template line ", stmt->line, ": output exceeds ",
                                                     kMaxOutputBytes, " bytes"));
    }
    if (flow_ != Flow::kNormal) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecFor(const Stmt& stmt) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*stmt.expr));
  // Lists are iterated in place (`iterable` keeps them alive); other iterables are expanded.
  ValueList expanded;
  const ValueList* list = &expanded;
  if (iterable.is_list()) {
    list = &iterable.AsList();
  } else if (iterable.is_mapping()) {
    for (const auto& [k, v] : iterable.AsDict()) expanded.push_back(Value::String(k));
  } else if (iterable.is_string()) {
    for (auto& c : SplitCodePoints(iterable.AsString())) expanded.push_back(Value::String(std::move(c)));
  } else if (!iterable.is_undefined() && !iterable.is_none()) {
    return Error(*stmt.expr, absl::StrCat("cannot iterate over a ", iterable.TypeName()));
  }
  if (stmt.loop_filter != nullptr) {
    // `for x in xs if cond`: filter first, so loop.length/last count only the kept items.
    ValueList kept;
    scopes_.emplace_back();
    absl::Status status;
    for (const Value& item : *list) {
      status = BindLoopTargets(stmt, item);
      if (!status.ok()) break;
      auto keep = Eval(*stmt.loop_filter);
      if (!keep.ok()) {
        status = keep.status();
        break;
      }
      if (keep->Truthy()) kept.push_back(item);
    }
    scopes_.pop_back();
    RETURN_IF_ERROR(status);
    expanded = std::move(kept);
    list = &expanded;
  }
  const ValueList& items = *list;
  if (items.empty()) {
    scopes_.emplace_back();
    absl::Status status = Exec(stmt.else_body);
    scopes_.pop_back();
    return status;
  }
  // The loop gets its own scope: `{% set %}` inside a loop does not leak out, but does carry
  // from one iteration to the next (jinja2 and @huggingface/jinja agree on both).
  scopes_.emplace_back();
  const int64_t n = static_cast<int64_t>(items.size());
  absl::Status status;
  for (int64_t i = 0; i < n; ++i) {
    status = BindLoopTargets(stmt, items[i]);
    if (!status.ok()) break;
    scopes_.back()["loop"] = Value::Dict({
        {"index", Value::Int(i + 1)},
        {"index0", Value::Int(i)},
        {"revindex", Value::Int(n - i)},
        {"revindex0", Value::Int(n - i - 1)},
        {"first", Value::Bool(i == 0)},
        {"last", Value::Bool(i == n - 1)},
        {"length", Value::Int(n)},
        {"previtem", i > 0 ? items[i - 1] : Value()},
        {"nextitem", i + 1 < n ? items[i + 1] : Value()},
    });
    status = Exec(stmt.body);
    if (!status.ok()) break;
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  scopes_.pop_back();
  return status;
}

absl::Status Evaluator::BindLoopTargets(const Stmt& stmt, const Value& item) {
  auto& scope = scopes_.back();
  if (stmt.targets.size() == 1) {
    scope[stmt.targets[0]] = item;
    return absl::OkStatus();
  }
  if (!item.is_list() || item.AsList().size() != stmt.targets.size()) {
    return Error(*stmt.expr, absl::StrCat("cannot unpack a ", item.TypeName(), " into ",
                                          stmt.targets.size(), " loop variables"));
  }
  for (size_t t = 0; t < stmt.targets.size(); ++t) scope[stmt.targets[t]] = item.AsList()[t];
  return absl::OkStatus();
}

absl::Status Evaluator::ExecSet(const Stmt& stmt) {
  ASSIGN_OR_RETURN(Value v, Eval(*stmt.expr));
  if (!stmt.set_attribute) {
    scopes_.back()[stmt.targets[0]] = std::move(v);
    return absl::OkStatus();
  }
  const Value& target = Lookup(stmt.targets[0]);
  if (target.kind() != Value::Kind::kNamespace) {
    return Error(*stmt.expr, absl::StrCat("'{% set ", stmt.targets[0], ".", stmt.targets[1],
                                          " %}' needs a namespace(), not a ", target.TypeName()));
  }
  if (v.Reaches(target)) {
    // Python's garbage collector frees such a cycle; our shared ownership would leak it on every
    // render (found by chat_template_fuzz).
    return Error(*stmt.expr, absl::StrCat("'{% set ", stmt.targets[0], ".", stmt.targets[1],
                                          " %}': the value holds the namespace itself"));
  }
  ValueDict& dict = target.MutableDict();
  for (auto& [k, old] : dict) {
    if (k == stmt.targets[1]) {
      old = std::move(v);
      return absl::OkStatus();
    }
  }
  dict.emplace_back(stmt.targets[1], std::move(v));
  return absl::OkStatus();
}

absl::Status Evaluator::EvalArgs(const Expr& e, size_t first, std::vector<Value>& args,
                                 std::vector<std::pair<std::string, Value>>* kwargs) {
  for (size_t i = first; i < e.operands.size(); ++i) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.operands[i]));
    args.push_back(std::move(v));
  }
  for (const auto& [key, expr] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*expr));
    if (kwargs == nullptr) return Error(e, absl::StrCat("'", e.name, "' takes no keyword arguments"));
    kwargs->emplace_back(key, std::move(v));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Evaluator::Eval(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.value;
    case ExprKind::kName:
      return Lookup(e.name);
    case ExprKind::kList: {
      std::vector<Value> items;
      RETURN_IF_ERROR(EvalArgs(e, 0, items, nullptr));
      return Value::List(std::move(items));
    }
    case ExprKind::kDict: {
      ValueDict items;
      for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
        ASSIGN_OR_RETURN(Value key, Eval(*e.operands[i]));
        if (!key.is_string()) return Error(e, "dict keys must be strings");
        ASSIGN_OR_RETURN(Value value, Eval(*e.operands[i + 1]));
        items.emplace_back(key.AsString(), std::move(value));
      }
      return Value::Dict(std::move(items));
    }
    case ExprKind::kAttribute: {
      ASSIGN_OR_RETURN(Value object, Eval(*e.operands[0]));
      const Value* found = object.Find(e.name);
      return found != nullptr ? *found : Value();
    }
    case ExprKind::kSubscript: {
      ASSIGN_OR_RETURN(Value object, Eval(*e.operands[0]));
      ASSIGN_OR_RETURN(Value index, Eval(*e.operands[1]));
      return EvalSubscript(e, object, index);
    }
    case ExprKind::kSlice:
      return EvalSlice(e);
    case ExprKind::kUnary: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.operands[0]));
      if (e.op == Op::kNot) return Value::Bool(!v.Truthy());
      if (v.kind() == Value::Kind::kInt) return Value::Int(e.op == Op::kNeg ? -v.AsInt() : v.AsInt());
      if (v.kind() == Value::Kind::kFloat) return Value::Float(e.op == Op::kNeg ? -v.AsNumber() : v.AsNumber());
      return Error(e, absl::StrCat("unary minus/plus needs a number, got ", v.TypeName()));
    }
    case ExprKind::kBinary: {
      ASSIGN_OR_RETURN(Value lhs, Eval(*e.operands[0]));
      ASSIGN_OR_RETURN(Value rhs, Eval(*e.operands[1]));
      return EvalBinary(e, lhs, rhs);
    }
    case ExprKind::kAnd:
    case ExprKind::kOr: {
      ASSIGN_OR_RETURN(Value lhs, Eval(*e.operands[0]));
      if (lhs.Truthy() == (e.kind == ExprKind::kOr)) return lhs;
      return Eval(*e.operands[1]);
    }
    case ExprKind::kTernary: {
      ASSIGN_OR_RETURN(Value cond, Eval(*e.operands[0]));
      if (cond.Truthy()) return Eval(*e.operands[1]);
      if (e.operands[2] == nullptr) return Value();
      return Eval(*e.operands[2]);
    }
    case ExprKind::kFilter: {
      ASSIGN_OR_RETURN(Value input, Eval(*e.operands[0]));
      std::vector<Value> args;
      KwArgs kwargs;
      RETURN_IF_ERROR(EvalArgs(e, 1, args, &kwargs));
      auto result = ApplyFilter(e.filter, e.name, input, args, kwargs);
      if (!result.ok()) return Error(e, std::string(result.status().message()));
      return result;
    }
    case ExprKind::kTest: {
      ASSIGN_OR_RETURN(Value input, Eval(*e.operands[0]));
      std::vector<Value> args;
      RETURN_IF_ERROR(EvalArgs(e, 1, args, nullptr));
      auto result = ApplyTest(e.test, e.name, input, args);
      if (!result.ok()) return Error(e, std::string(result.status().message()));
      return Value::Bool(*result != e.negated);
    }
    case ExprKind::kCall:
      return EvalCall(e);
    case ExprKind::kMethod: {
      ASSIGN_OR_RETURN(Value object, Eval(*e.operands[0]));
      std::vector<Value> args;
      RETURN_IF_ERROR(EvalArgs(e, 1, args, nullptr));
      auto result = CallMethod(e.method, e.name, object, args);
      if (!result.ok()) return Error(e, std::string(result.status().message()));
      return result;
    }
  }
  return Error(e, "unknown expression");
}

absl::StatusOr<Value> Evaluator::EvalSubscript(const Expr& e, const Value& object, const Value& index) {
  if (object.is_mapping()) {
    if (!index.is_string()) return Value();
    const Value* found = object.Find(index.AsString());
    return found != nullptr ? *found : Value();
  }
  if (object.is_list() || object.is_string()) {
    if (index.kind() != Value::Kind::kInt) {
      return Error(e, absl::StrCat("list and string indices must be integers, got ", index.TypeName()));
    }
    int64_t i = index.AsInt();
    if (object.is_list()) {
      const int64_t n = static_cast<int64_t>(object.AsList().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();  // jinja2 yields undefined for a missing item
      return object.AsList()[i];
    }
    std::vector<std::string> chars = SplitCodePoints(object.AsString());
    const int64_t n = static_cast<int64_t>(chars.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return Value::String(std::move(chars[i]));
  }
  return Value();
}

absl::StatusOr<Value> Evaluator::EvalSlice(const Expr& e) {
  ASSIGN_OR_RETURN(Value object, Eval(*e.operands[0]));
  Value bounds[3];
  for (int k = 0; k < 3; ++k) {
    if (e.operands[k + 1] == nullptr) continue;
    ASSIGN_OR_RETURN(bounds[k], Eval(*e.operands[k + 1]));
    if (bounds[k].kind() != Value::Kind::kInt && !bounds[k].is_none()) {
      return Error(e, "slice bounds must be integers");
    }
  }
  const int64_t step = bounds[2].kind() == Value::Kind::kInt ? bounds[2].AsInt() : 1;
  if (step == 0) return Error(e, "slice step cannot be zero");
  const Value* start = e.operands[1] ? &bounds[0] : nullptr;
  const Value* stop = e.operands[2] ? &bounds[1] : nullptr;
  if (object.is_list()) {
    const ValueList& l = object.AsList();
    ValueList out;
    for (size_t i : SliceIndices(static_cast<int64_t>(l.size()), start, stop, step)) out.push_back(l[i]);
    return Value::List(std::move(out));
  }
  if (object.is_string()) {
    std::vector<std::string> chars = SplitCodePoints(object.AsString());
    std::string out;
    for (size_t i : SliceIndices(static_cast<int64_t>(chars.size()), start, stop, step)) out += chars[i];
    return Value::String(std::move(out));
  }
  return Error(e, absl::StrCat("cannot slice a ", object.TypeName()));
}

absl::StatusOr<Value> Evaluator::EvalBinary(const Expr& e, const Value& a, const Value& b) {
  using K = Value::Kind;
  switch (e.op) {
    case Op::kEq: return Value::Bool(a.Equals(b));
    case Op::kNe: return Value::Bool(!a.Equals(b));
    case Op::kIn:
    case Op::kNotIn: {
      bool found = false;
      if (b.is_string() && a.is_string()) {
        found = b.AsString().find(a.AsString()) != std::string::npos;
      } else if (b.is_list()) {
        for (const Value& item : b.AsList()) found = found || item.Equals(a);
      } else if (b.is_mapping()) {
        found = a.is_string() && b.Find(a.AsString()) != nullptr;
      } else if (!b.is_undefined()) {
        return Error(e, absl::StrCat("'in' needs a string, list or mapping on the right, got ", b.TypeName()));
      }
      return Value::Bool(found == (e.op == Op::kIn));
    }
    case Op::kConcat: return Value::String(a.ToString() + b.ToString());
    default:
      break;
  }
  if (a.is_undefined() || b.is_undefined()) {
    return Error(e, "arithmetic or comparison on an undefined value");
  }
  if (e.op == Op::kLt || e.op == Op::kLe || e.op == Op::kGt || e.op == Op::kGe) {
    int cmp = 0;
    if (a.is_number() && b.is_number()) {
      cmp = a.AsNumber() < b.AsNumber() ? -1 : (a.AsNumber() > b.AsNumber() ? 1 : 0);
    } else if (a.is_string() && b.is_string()) {
      cmp = a.AsString().compare(b.AsString());
    } else {
      return Error(e, absl::StrCat("cannot compare ", a.TypeName(), " with ", b.TypeName()));
    }
    switch (e.op) {
      case Op::kLt: return Value::Bool(cmp < 0);
      case Op::kLe: return Value::Bool(cmp <= 0);
      case Op::kGt: return Value::Bool(cmp > 0);
      default: return Value::Bool(cmp >= 0);
    }
  }
  if (e.op == Op::kAdd) {
    if (a.is_string() && b.is_string()) return Value::String(a.AsString() + b.AsString());
    if (a.is_list() && b.is_list()) {
      ValueList out = a.AsList();
      out.insert(out.end(), b.AsList().begin(), b.AsList().end());
      return Value::List(std::move(out));
    }
    // @huggingface/jinja joins a string with any other scalar; jinja2 would raise.
    if ((a.is_string() && !b.is_list() && !b.is_mapping()) || (b.is_string() && !a.is_list() && !a.is_mapping())) {
      return Value::String(a.ToString() + b.ToString());
    }
  }
  if (e.op == Op::kMul && ((a.is_string() && b.kind() == K::kInt) || (b.is_string() && a.kind() == K::kInt))) {
    const std::string& s = a.is_string() ? a.AsString() : b.AsString();
    const int64_t times = a.is_string() ? b.AsInt() : a.AsInt();
    if (times > 0 && s.size() * static_cast<uint64_t>(times) > kMaxOutputBytes) return Error(e, "string repetition too large");
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value::String(std::move(out));
  }
  if (!a.is_number() || !b.is_number()) {
    return Error(e, absl::StrCat("unsupported operand types ", a.TypeName(), " and ", b.TypeName()));
  }
  const bool ints = a.kind() == K::kInt && b.kind() == K::kInt;
  const double x = a.AsNumber();
  const double y = b.AsNumber();
  switch (e.op) {
    case Op::kAdd: return ints ? Value::Int(a.AsInt() + b.AsInt()) : Value::Float(x + y);
    case Op::kSub: return ints ? Value::Int(a.AsInt() - b.AsInt()) : Value::Float(x - y);
    case Op::kMul: return ints ? Value::Int(a.AsInt() * b.AsInt()) : Value::Float(x * y);
    case Op::kDiv:
      if (y == 0) return Error(e, "division by zero");
      return Value::Float(x / y);
    case Op::kFloorDiv:
      if (y == 0) return Error(e, "division by zero");
      return ints ? Value::Int(FloorDiv(a.AsInt(), b.AsInt())) : Value::Float(std::floor(x / y));
    case Op::kMod:
      if (y == 0) return Error(e, "modulo by zero");
      return ints ? Value::Int(FloorMod(a.AsInt(), b.AsInt())) : Value::Float(x - y * std::floor(x / y));
    case Op::kPow:
      if (ints && b.AsInt() >= 0) return Value::Int(static_cast<int64_t>(std::pow(x, y)));
      return Value::Float(std::pow(x, y));
    default:
      break;
  }
  return Error(e, "unsupported operator");
}

absl::StatusOr<Value> Evaluator::EvalCall(const Expr& e) {
  std::vector<Value> args;
  KwArgs kwargs;
  RETURN_IF_ERROR(EvalArgs(e, 0, args, &kwargs));
  switch (e.function) {
    case Function::kRaiseException:
      // The template's own message, unadorned: callers show it to whoever sent the request.
      return absl::InvalidArgumentError(args.empty() ? "raise_exception() called" : args[0].ToString());
    case Function::kStrftimeNow:
      if (args.size() != 1 || !args[0].is_string()) return Error(e, "strftime_now() takes one format string");
      return Value::String(absl::FormatTime(args[0].AsString(), now_, zone_));
    case Function::kNamespace: {
      if (!args.empty()) return Error(e, "namespace() takes keyword arguments only");
      ValueDict attrs;
      for (auto& [k, v] : kwargs) attrs.emplace_back(k, std::move(v));
      return Value::Namespace(std::move(attrs));
    }
    case Function::kRange: {
      if (!kwargs.empty() || args.empty() || args.size() > 3) return Error(e, "range() takes 1 to 3 integers");
      for (const Value& a : args) {
        if (a.kind() != Value::Kind::kInt) return Error(e, "range() takes integers");
      }
      const int64_t start = args.size() > 1 ? args[0].AsInt() : 0;
      const int64_t stop = args.size() > 1 ? args[1].AsInt() : args[0].AsInt();
      const int64_t step = args.size() > 2 ? args[2].AsInt() : 1;
      if (step == 0) return Error(e, "range() step cannot be zero");
      const double count = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
      if (count > static_cast<double>(kMaxRange)) return Error(e, "range() too large");
      ValueList out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::Int(i));
      return Value::List(std::move(out));
    }
  }
  return Error(e, "unknown function");
}

}  // namespace caduceus::text::jinja
