// Parsed template: expression and statement trees. Filter, test, function and method names are
// resolved to enums by the parser, so evaluation never looks names up and unknown names fail
// when the template is loaded rather than on some later request.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "router/text/jinja/value.h"

namespace caduceus::text::jinja {

enum class Filter {
  kTrim, kLength, kToJson, kUpper, kLower, kDefault, kFirst, kLast, kJoin, kString, kItems,
  kList, kInt, kFloat, kCapitalize, kTitle, kReplace, kReject, kSelect, kAbs, kRound,
};
enum class Test {
  kDefined, kUndefined, kNone, kString, kNumber, kInteger, kFloat, kBoolean, kTrue, kFalse,
  kMapping, kIterable, kSequence, kOdd, kEven, kEqualTo, kLower, kUpper,
};
enum class Function { kRaiseException, kStrftimeNow, kNamespace, kRange };
enum class Method {
  kStrip, kLstrip, kRstrip, kStartsWith, kEndsWith, kSplit, kUpper, kLower, kTitle,
  kCapitalize, kReplace, kItems, kKeys, kValues, kGet,
};

enum class ExprKind {
  kLiteral,    // value
  kName,       // name
  kList,       // operands = items
  kDict,       // operands = key0, value0, key1, value1, ...
  kAttribute,  // operands[0].name
  kSubscript,  // operands[0][operands[1]]
  kSlice,      // operands[0][operands[1]:operands[2]:operands[3]] (null operand = omitted)
  kUnary,      // op operands[0]
  kBinary,     // operands[0] op operands[1]
  kAnd, kOr,   // short-circuit, Python semantics (yield an operand)
  kTernary,    // operands[1] if operands[0] else operands[2] (operands[2] may be null)
  kFilter,     // operands[0] | filter(operands[1..], kwargs)
  kTest,       // operands[0] is [not] test(operands[1..])
  kCall,       // function(operands, kwargs)
  kMethod,     // operands[0].method(operands[1..])
};

enum class Op {
  kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat, kEq, kNe, kLt, kLe, kGt, kGe, kIn,
  kNotIn, kNot, kNeg, kPos,
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value value;
  std::string name;  // variable, attribute, or the filter/test/function/method as written
  Op op = Op::kAdd;
  Filter filter = Filter::kTrim;
  Test test = Test::kDefined;
  Function function = Function::kRange;
  Method method = Method::kStrip;
  bool negated = false;  // `is not`
  int height = 1;        // longest path to a leaf, bounded by kMaxExpressionHeight
  std::vector<std::unique_ptr<Expr>> operands;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
};

enum class StmtKind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;                         // kText
  std::unique_ptr<Expr> expr;               // kOutput value, kFor iterable, kSet value
  std::unique_ptr<Expr> loop_filter;        // kFor: `for x in xs if cond` (may be null)
  // kIf: conditions[i] guards bodies[i]; a trailing extra body is the else branch.
  std::vector<std::unique_ptr<Expr>> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> targets;         // kFor loop variables; kSet: {name} or {ns, attr}
  bool set_attribute = false;               // kSet of `ns.attr`
  Body body;                                // kFor body
  Body else_body;                           // kFor else (runs when nothing was iterated)
};

}  // namespace caduceus::text::jinja
