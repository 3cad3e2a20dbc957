#include "router/text/jinja/parser.h"

#include <charconv>
#include <algorithm>
#include <cstdlib>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "router/text/jinja/lexer.h"
#include "router/text/jinja/names.h"
#include "router/text/jinja/token_cursor.h"

namespace caduceus::text::jinja {
namespace {

using ExprPtr = std::unique_ptr<Expr>;

class Parser : private TokenCursor {
 public:
  explicit Parser(std::vector<Token> tokens) : TokenCursor(std::move(tokens)) {}

  absl::StatusOr<Body> ParseTemplate() {
    std::string ended_with;
    ASSIGN_OR_RETURN(Body body, ParseBody({}, "", 0, &ended_with));
    return body;
  }

 private:
  // Bounds recursion through both statements and expressions.
  class DepthGuard {
   public:
    explicit DepthGuard(int& depth) : depth_(depth) { ++depth_; }
    ~DepthGuard() { --depth_; }
    bool exceeded() const { return depth_ > kMaxNesting; }

   private:
    int& depth_;
  };


  // Parses statements until `{% <one of end_tags>` (the tag name is consumed, the rest of the
  // tag is left to the caller) or end of input when end_tags is empty.
  absl::StatusOr<Body> ParseBody(std::vector<std::string_view> end_tags, std::string_view opener,
                                 int opener_line, std::string* ended_with) {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error("blocks nest too deeply");
    Body body;
    while (true) {
      const Token& tok = Peek();
      switch (tok.kind) {
        case TokenKind::kEnd:
          if (!end_tags.empty()) {
            return Error(opener_line, absl::StrCat("'{% ", std::string(opener), " %}' is never closed (expected '{% ",
                                                   std::string(end_tags.back()), " %}')"));
          }
          return body;
        case TokenKind::kText: {
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = StmtKind::kText;
          stmt->line = tok.line;
          stmt->text = Next().text;
          body.push_back(std::move(stmt));
          break;
        }
        case TokenKind::kOpenExpression: {
          auto stmt = std::make_unique<Stmt>();
          stmt->kind = StmtKind::kOutput;
          stmt->line = Next().line;
          ASSIGN_OR_RETURN(stmt->expr, ParseExpression());
          RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseExpression, "'}}'"));
          body.push_back(std::move(stmt));
          break;
        }
        case TokenKind::kOpenStatement: {
          Next();
          if (Peek().kind != TokenKind::kName) return Error("expected a tag name after '{%'");
          const std::string name = Peek().text;
          for (std::string_view end : end_tags) {
            if (name == end) {
              Next();
              *ended_with = name;
              return body;
            }
          }
          ASSIGN_OR_RETURN(auto stmt, ParseStatement());
          body.push_back(std::move(stmt));
          break;
        }
        default:
          return Error(absl::StrCat("unexpected ", Describe(tok)));
      }
    }
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseStatement() {
    const Token& tok = Next();
    const std::string name = tok.text;
    auto stmt = std::make_unique<Stmt>();
    stmt->line = tok.line;
    if (name == "if") {
      stmt->kind = StmtKind::kIf;
      std::string ended_with = "elif";
      while (ended_with == "elif") {
        ASSIGN_OR_RETURN(auto cond, ParseExpression());
        RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
        stmt->conditions.push_back(std::move(cond));
        ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, "if", tok.line, &ended_with));
        stmt->bodies.push_back(std::move(body));
      }
      if (ended_with == "else") {
        RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
        ASSIGN_OR_RETURN(Body body, ParseBody({"endif"}, "if", tok.line, &ended_with));
        stmt->bodies.push_back(std::move(body));
      }
      RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
      return stmt;
    }
    if (name == "for") {
      stmt->kind = StmtKind::kFor;
      do {
        ASSIGN_OR_RETURN(std::string target, ExpectName());
        stmt->targets.push_back(std::move(target));
      } while (IsOp(",") && (Next(), true));
      if (!IsName("in")) return Error("expected 'in' in '{% for %}'");
      Next();
      ASSIGN_OR_RETURN(stmt->expr, ParseTernary(/*allow_if=*/false));
      if (IsName("if")) {
        Next();
        ASSIGN_OR_RETURN(stmt->loop_filter, ParseOr());
      }
      if (IsName("recursive")) return Error("recursive for loops are not supported");
      RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
      std::string ended_with;
      ++loop_depth_;
      auto loop_body = ParseBody({"else", "endfor"}, "for", tok.line, &ended_with);
      --loop_depth_;
      if (!loop_body.ok()) return loop_body.status();
      stmt->body = std::move(loop_body).value();
      if (ended_with == "else") {
        RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
        ASSIGN_OR_RETURN(stmt->else_body, ParseBody({"endfor"}, "for", tok.line, &ended_with));
      }
      RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
      return stmt;
    }
    if (name == "set") {
      stmt->kind = StmtKind::kSet;
      ASSIGN_OR_RETURN(std::string target, ExpectName());
      stmt->targets.push_back(std::move(target));
      if (IsOp(".")) {
        Next();
        ASSIGN_OR_RETURN(std::string attr, ExpectName());
        stmt->targets.push_back(std::move(attr));
        stmt->set_attribute = true;
      }
      if (IsOp(",")) return Error("'{% set a, b = ... %}' (tuple assignment) is not supported");
      if (!IsOp("=")) return Error("block '{% set %}...{% endset %}' is not supported (expected '=')");
      Next();
      ASSIGN_OR_RETURN(stmt->expr, ParseExpression());
      RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
      return stmt;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) return Error(tok.line, absl::StrCat("'{% ", name, " %}' outside a for loop"));
      stmt->kind = name == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      RETURN_IF_ERROR(ExpectKind(TokenKind::kCloseStatement, "'%}'"));
      return stmt;
    }
    if (IsUnsupportedTag(name)) {
      return Error(tok.line, absl::StrCat("unsupported tag '{% ", name, " %}'"));
    }
    return Error(tok.line, absl::StrCat("unknown or misplaced tag '{% ", name, " %}'"));
  }

  // ---- expressions, lowest precedence first (same ladder as jinja2's parser) ----

  absl::StatusOr<ExprPtr> ParseExpression() { return ParseTernary(/*allow_if=*/true); }

  ExprPtr Make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  absl::StatusOr<ExprPtr> MakeBinary(ExprKind kind, Op op, ExprPtr lhs, ExprPtr rhs, int line) {
    auto e = Make(kind, line);
    e->op = op;
    e->operands.push_back(std::move(lhs));
    e->operands.push_back(std::move(rhs));
    RETURN_IF_ERROR(Seal(*e));
    return e;
  }
  // Records the finished node's height. Left-associative chains (`a + b + ...`, `x|f|g...`,
  // `a.b.c...`) grow the tree without recursing in the parser, so the height is bounded here
  // too: the evaluator (and the node destructors) recurse once per level.
  absl::Status Seal(Expr& e) const {
    int height = 0;
    for (const auto& operand : e.operands) {
      if (operand != nullptr) height = std::max(height, operand->height);
    }
    for (const auto& [key, value] : e.kwargs) height = std::max(height, value->height);
    e.height = height + 1;
    if (e.height > kMaxExpressionHeight) return Error(e.line, "expression nests too deeply");
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParseTernary(bool allow_if) {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error("expression nests too deeply");
    ASSIGN_OR_RETURN(ExprPtr value, ParseOr());
    if (!allow_if || !IsName("if")) return value;
    const int line = Next().line;
    auto e = Make(ExprKind::kTernary, line);
    ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
    e->operands.push_back(std::move(cond));
    e->operands.push_back(std::move(value));
    if (IsName("else")) {
      Next();
      ASSIGN_OR_RETURN(ExprPtr other, ParseTernary(true));
      e->operands.push_back(std::move(other));
    } else {
      e->operands.push_back(nullptr);
    }
    RETURN_IF_ERROR(Seal(*e));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr lhs, ParseAnd());
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr rhs, ParseAnd());
      ASSIGN_OR_RETURN(lhs, MakeBinary(ExprKind::kOr, Op::kAdd, std::move(lhs), std::move(rhs), line));
    }
    return lhs;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr lhs, ParseNot());
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr rhs, ParseNot());
      ASSIGN_OR_RETURN(lhs, MakeBinary(ExprKind::kAnd, Op::kAdd, std::move(lhs), std::move(rhs), line));
    }
    return lhs;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(depth_);
      if (guard.exceeded()) return Error("expression nests too deeply");
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      auto e = Make(ExprKind::kUnary, line);
      e->op = Op::kNot;
      e->operands.push_back(std::move(operand));
      RETURN_IF_ERROR(Seal(*e));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    ASSIGN_OR_RETURN(ExprPtr lhs, ParseAdd());
    while (true) {
      std::optional<Op> op;
      const Token& tok = Peek();
      if (tok.kind == TokenKind::kOperator) {
        if (tok.text == "==") op = Op::kEq;
        else if (tok.text == "!=") op = Op::kNe;
        else if (tok.text == "<") op = Op::kLt;
        else if (tok.text == "<=") op = Op::kLe;
        else if (tok.text == ">") op = Op::kGt;
        else if (tok.text == ">=") op = Op::kGe;
        if (op) Next();
      } else if (IsName("in")) {
        Next();
        op = Op::kIn;
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = Op::kNotIn;
      }
      if (!op) return lhs;
      ASSIGN_OR_RETURN(ExprPtr rhs, ParseAdd());
      ASSIGN_OR_RETURN(lhs, MakeBinary(ExprKind::kBinary, *op, std::move(lhs), std::move(rhs), tok.line));
    }
  }

  // One left-associative binary level: `next` parses operands, `ops` maps token text to Op.
  template <typename NextFn>
  absl::StatusOr<ExprPtr> ParseLevel(NextFn next, std::initializer_list<std::pair<std::string_view, Op>> ops) {
    ASSIGN_OR_RETURN(ExprPtr lhs, (this->*next)());
    while (true) {
      std::optional<Op> op;
      for (const auto& [text, o] : ops) {
        if (IsOp(text)) op = o;
      }
      if (!op) return lhs;
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr rhs, (this->*next)());
      ASSIGN_OR_RETURN(lhs, MakeBinary(ExprKind::kBinary, *op, std::move(lhs), std::move(rhs), line));
    }
  }
  absl::StatusOr<ExprPtr> ParseAdd() {
    return ParseLevel(&Parser::ParseConcat, {{"+", Op::kAdd}, {"-", Op::kSub}});
  }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseLevel(&Parser::ParseMul, {{"~", Op::kConcat}}); }
  absl::StatusOr<ExprPtr> ParseMul() {
    return ParseLevel(&Parser::ParsePow, {{"*", Op::kMul}, {"/", Op::kDiv}, {"//", Op::kFloorDiv}, {"%", Op::kMod}});
  }
  absl::StatusOr<ExprPtr> ParsePow() { return ParseLevel(&Parser::ParseUnary, {{"**", Op::kPow}}); }

  absl::StatusOr<ExprPtr> ParseUnary() {
    DepthGuard guard(depth_);
    if (guard.exceeded()) return Error("expression nests too deeply");
    if (IsOp("-") || IsOp("+")) {
      const Token& tok = Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary());
      auto e = Make(ExprKind::kUnary, tok.line);
      e->op = tok.text == "-" ? Op::kNeg : Op::kPos;
      e->operands.push_back(std::move(operand));
      RETURN_IF_ERROR(Seal(*e));
      return e;
    }
    ASSIGN_OR_RETURN(ExprPtr primary, ParsePrimary());
    ASSIGN_OR_RETURN(primary, ParsePostfix(std::move(primary)));
    return ParseFiltersAndTests(std::move(primary));
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Next();
    switch (tok.kind) {
      case TokenKind::kString: {
        std::string text = tok.text;
        while (Peek().kind == TokenKind::kString) text += Next().text;  // "a" "b" concatenates
        auto e = Make(ExprKind::kLiteral, tok.line);
        e->value = Value::String(std::move(text));
        RETURN_IF_ERROR(Seal(*e));
        return e;
      }
      case TokenKind::kInteger: {
        int64_t v = 0;
        auto [ptr, ec] = std::from_chars(tok.text.data(), tok.text.data() + tok.text.size(), v);
        if (ec != std::errc()) return Error(tok.line, absl::StrCat("integer literal out of range: ", tok.text));
        auto e = Make(ExprKind::kLiteral, tok.line);
        e->value = Value::Int(v);
        RETURN_IF_ERROR(Seal(*e));
        return e;
      }
      case TokenKind::kFloat: {
        auto e = Make(ExprKind::kLiteral, tok.line);
        e->value = Value::Float(std::strtod(tok.text.c_str(), nullptr));
        RETURN_IF_ERROR(Seal(*e));
        return e;
      }
      case TokenKind::kName: {
        auto e = Make(ExprKind::kLiteral, tok.line);
        if (tok.text == "true" || tok.text == "True") {
          e->value = Value::Bool(true);
        } else if (tok.text == "false" || tok.text == "False") {
          e->value = Value::Bool(false);
        } else if (tok.text == "none" || tok.text == "None") {
          e->value = Value::None();
        } else if (IsOp("(")) {
          return ParseCall(tok);
        } else {
          e->kind = ExprKind::kName;
          e->name = tok.text;
        }
        RETURN_IF_ERROR(Seal(*e));
        return e;
      }
      case TokenKind::kOperator:
        if (tok.text == "(") {
          ASSIGN_OR_RETURN(ExprPtr inner, ParseExpression());
          if (IsOp(",")) return Error(tok.line, "tuples are not supported");
          RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (tok.text == "[") {
          auto e = Make(ExprKind::kList, tok.line);
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            e->operands.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(ExpectOp("]"));
          RETURN_IF_ERROR(Seal(*e));
          return e;
        }
        if (tok.text == "{") {
          auto e = Make(ExprKind::kDict, tok.line);
          while (!IsOp("}")) {
            ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            RETURN_IF_ERROR(ExpectOp(":"));
            ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            e->operands.push_back(std::move(key));
            e->operands.push_back(std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(ExpectOp("}"));
          RETURN_IF_ERROR(Seal(*e));
          return e;
        }
        break;
      default:
        break;
    }
    return Error(tok.line, absl::StrCat("expected an expression but found ", Describe(tok)));
  }

  // Positional and keyword arguments after `(`; consumes the closing `)`.
  absl::Status ParseArguments(Expr& e) {
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().kind == TokenKind::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        Next();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e.kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e.kwargs.empty()) return Error("positional argument after keyword argument");
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e.operands.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      Next();
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseCall(const Token& name) {
    auto function = LookupFunction(name.text);
    if (!function) return Error(name.line, absl::StrCat("unknown function '", name.text, "()'"));
    auto e = Make(ExprKind::kCall, name.line);
    e->function = *function;
    e->name = name.text;
    RETURN_IF_ERROR(ParseArguments(*e));
    RETURN_IF_ERROR(Seal(*e));
    return e;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        const int line = Next().line;
        if (Peek().kind == TokenKind::kInteger) {  // `x.0` is `x[0]` in Jinja
          auto e = Make(ExprKind::kSubscript, line);
          e->operands.push_back(std::move(node));
          ASSIGN_OR_RETURN(ExprPtr index, ParsePrimary());
          e->operands.push_back(std::move(index));
          RETURN_IF_ERROR(Seal(*e));
          node = std::move(e);
          continue;
        }
        ASSIGN_OR_RETURN(std::string attr, ExpectName());
        if (IsOp("(")) {
          auto method = LookupMethod(attr);
          if (!method) return Error(line, absl::StrCat("unsupported method '.", attr, "()'"));
          auto e = Make(ExprKind::kMethod, line);
          e->method = *method;
          e->name = attr;
          e->operands.push_back(std::move(node));
          RETURN_IF_ERROR(ParseArguments(*e));
          RETURN_IF_ERROR(Seal(*e));
          node = std::move(e);
          continue;
        }
        auto e = Make(ExprKind::kAttribute, line);
        e->name = std::move(attr);
        e->operands.push_back(std::move(node));
        RETURN_IF_ERROR(Seal(*e));
        node = std::move(e);
        continue;
      }
      if (IsOp("[")) {
        const int line = Next().line;
        ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node), line));
        continue;
      }
      if (IsOp("(")) return Error("only builtin functions and methods can be called");
      return node;
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    int colons = 0;
    while (true) {
      if (!IsOp(":") && !IsOp("]")) {
        ASSIGN_OR_RETURN(parts[colons], ParseExpression());
      }
      if (IsOp(":") && colons < 2) {
        Next();
        ++colons;
        continue;
      }
      break;
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    if (colons == 0) {
      if (!parts[0]) return Error(line, "empty subscript '[]'");
      auto e = Make(ExprKind::kSubscript, line);
      e->operands.push_back(std::move(object));
      e->operands.push_back(std::move(parts[0]));
      RETURN_IF_ERROR(Seal(*e));
      return e;
    }
    auto e = Make(ExprKind::kSlice, line);
    e->operands.push_back(std::move(object));
    for (auto& p : parts) e->operands.push_back(std::move(p));
    RETURN_IF_ERROR(Seal(*e));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseFiltersAndTests(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        const int line = Next().line;
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        auto filter = LookupFilter(name);
        if (!filter) return Error(line, absl::StrCat("unknown filter '", name, "'"));
        auto e = Make(ExprKind::kFilter, line);
        e->filter = *filter;
        e->name = name;
        e->operands.push_back(std::move(node));
        if (IsOp("(")) RETURN_IF_ERROR(ParseArguments(*e));
        if (*filter == Filter::kReject || *filter == Filter::kSelect) {
          // The test is named by a string argument; resolve it now, not per request.
          if (e->operands.size() < 2 || e->operands[1]->kind != ExprKind::kLiteral ||
              !e->operands[1]->value.is_string()) {
            return Error(line, absl::StrCat("filter '", name, "' needs a test name string"));
          }
          if (!LookupTest(e->operands[1]->value.AsString())) {
            return Error(line, absl::StrCat("unknown test '", e->operands[1]->value.AsString(), "'"));
          }
        }
        RETURN_IF_ERROR(Seal(*e));
        node = std::move(e);
        continue;
      }
      if (IsName("is")) {
        const int line = Next().line;
        auto e = Make(ExprKind::kTest, line);
        if (IsName("not")) {
          Next();
          e->negated = true;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        auto test = LookupTest(name);
        if (!test) return Error(line, absl::StrCat("unknown test '", name, "'"));
        e->test = *test;
        e->name = name;
        e->operands.push_back(std::move(node));
        if (IsOp("(")) {
          RETURN_IF_ERROR(ParseArguments(*e));
        } else if (Peek().kind == TokenKind::kString || Peek().kind == TokenKind::kInteger ||
                   Peek().kind == TokenKind::kFloat) {
          ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());  // `x is equalto 3`
          e->operands.push_back(std::move(arg));
        }
        RETURN_IF_ERROR(Seal(*e));
        node = std::move(e);
        continue;
      }
      return node;
    }
  }

  int depth_ = 0;
  int loop_depth_ = 0;  // break/continue are only valid inside a for body
};

}  // namespace

absl::StatusOr<Body> Parse(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  return Parser(std::move(tokens)).ParseTemplate();
}

}  // namespace caduceus::text::jinja
