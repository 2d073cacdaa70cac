// Errors of the chat template engine: constructs outside the subset are
// rejected at parse time with their line and column; runtime errors name the
// construct and line (with jinja2's wording where jinja2 has one); a
// template's raise_exception message comes back exactly.
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/template/chat_template.h"
#include "tests/server/template/template_test_util.h"
#include "tests/support/status_assertions.h"

namespace adapterd::tmpl {
namespace {

using ::adapterd::testing::IsError;
using testing::RenderText;

absl::Status ParseError(const std::string& source) { return ChatTemplate::Parse(source).status(); }

absl::Status RenderError(const std::string& source, const std::string& context = "{}") {
  return RenderText(source, context).status();
}

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

TEST(ChatTemplateParseErrorTest, UnsupportedFilterNamesItsLineAndColumn) {
  EXPECT_TRUE(IsError(ParseError("a\nb {{ x|wordwrap }}"), kInvalid,
                      {"chat template line 2, column 8: filter \"wordwrap\" is not supported"}));
  EXPECT_TRUE(IsError(ParseError("{{ x|nosuchfilter(1) }}"), kInvalid, {"filter \"nosuchfilter\""}));
}

TEST(ChatTemplateParseErrorTest, UnsupportedTestAndStatements) {
  EXPECT_TRUE(IsError(ParseError("{% if x is escaped %}{% endif %}"), kInvalid,
                      {"line 1, column 12", "test \"escaped\" is not supported"}));
  EXPECT_TRUE(IsError(ParseError("\n\n{% include 'x' %}"), kInvalid,
                      {"line 3", "statement \"{% include %}\" is not supported"}));
  EXPECT_TRUE(IsError(ParseError("{% with a = 1 %}{% endwith %}"), kInvalid, {"\"{% with %}\" is not supported"}));
  EXPECT_TRUE(IsError(ParseError("{% frobnicate %}"), kInvalid, {"unknown statement \"{% frobnicate %}\""}));
  EXPECT_TRUE(IsError(ParseError("{% for x in xs recursive %}{% endfor %}"), kInvalid,
                      {"recursive loops are not supported"}));
  EXPECT_TRUE(IsError(ParseError("{% macro m() %}{{ caller() }}{% endmacro %}"), kInvalid,
                      {"macros using \"caller\" are not supported"}));
  EXPECT_TRUE(IsError(ParseError("{{ f(*args) }}"), kInvalid, {"argument unpacking"}));
  EXPECT_TRUE(IsError(ParseError("{% set x | upper %}a{% endset %}"), kInvalid,
                      {"filters on block assignments are not supported"}));
}

TEST(ChatTemplateParseErrorTest, StructureErrors) {
  EXPECT_TRUE(IsError(ParseError("{% if x %}\nyes"), kInvalid,
                      {"line 2", "unexpected end of template; expected {% elif %} or {% else %} or {% endif %}"}));
  EXPECT_TRUE(IsError(ParseError("{% endfor %}"), kInvalid, {"unknown statement \"{% endfor %}\""}));
  EXPECT_TRUE(IsError(ParseError("{% for x in y %}{% endif %}{% endfor %}"), kInvalid, {"{% endif %}"}));
  EXPECT_TRUE(IsError(ParseError("{% break %}"), kInvalid, {"\"{% break %}\" outside a loop"}));
  EXPECT_TRUE(IsError(ParseError("{% for x in y %}{% macro m() %}{% continue %}{% endmacro %}{% endfor %}"),
                      kInvalid, {"\"{% continue %}\" outside a loop"}));
  EXPECT_TRUE(IsError(ParseError("{{ }}"), kInvalid, {"expected an expression"}));
  EXPECT_TRUE(IsError(ParseError("{{ 1 + }}"), kInvalid, {"unexpected end of expression"}));
  EXPECT_TRUE(IsError(ParseError("{{ x"), kInvalid, {"expected end of expression"}));
  EXPECT_TRUE(IsError(ParseError("{% set true = 1 %}"), kInvalid, {"cannot assign to the constant \"true\""}));
  EXPECT_TRUE(IsError(ParseError("{% macro m(a=1, b) %}{% endmacro %}"), kInvalid,
                      {"non-default macro parameter"}));
  EXPECT_TRUE(IsError(ParseError("{{ f(a=1, 2) }}"), kInvalid, {"positional argument follows keyword"}));
  EXPECT_TRUE(IsError(ParseError("{{ f(a=1, a=2) }}"), kInvalid, {"keyword argument \"a\" repeated"}));
  EXPECT_TRUE(IsError(ParseError("{{ x is defined is defined }}"), kInvalid, {"chained"}));
}

TEST(ChatTemplateParseErrorTest, LexicalErrors) {
  EXPECT_TRUE(IsError(ParseError("a {# never closed"), kInvalid, {"line 1, column 5", "missing end of comment"}));
  EXPECT_TRUE(IsError(ParseError("{% raw %}x"), kInvalid, {"missing end of raw directive"}));
  EXPECT_TRUE(IsError(ParseError("{{ 'abc }}"), kInvalid, {"line 1, column 4", "unterminated string literal"}));
  EXPECT_TRUE(IsError(ParseError("{{ a $ b }}"), kInvalid, {"column 6", "unexpected character '$'"}));
  EXPECT_TRUE(IsError(ParseError("{{ (a] }}"), kInvalid, {"unexpected ']', expected ')'"}));
  EXPECT_TRUE(IsError(ParseError("{{ a) }}"), kInvalid, {"unexpected ')'"}));
  EXPECT_TRUE(IsError(ParseError("{{ '\\x4' }}"), kInvalid, {"truncated \\x escape"}));
  EXPECT_TRUE(IsError(ParseError("{{ '\\N{DASH}' }}"), kInvalid, {"\\N{...} escapes are not supported"}));
  EXPECT_TRUE(IsError(ParseError("{{ 99999999999999999999 }}"), kInvalid, {"integer literal is too large"}));
  EXPECT_TRUE(IsError(ParseError("ok \xff\xfe"), kInvalid, {"not valid UTF-8 (byte offset 3)"}));
  EXPECT_TRUE(IsError(ParseError("{{ café }}"), kInvalid, {"unexpected character 'é'"}));
}

TEST(ChatTemplateParseErrorTest, NestingIsBounded) {
  std::string deep = "{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}";
  EXPECT_TRUE(IsError(ParseError(deep), kInvalid, {"nested more than 100 levels"}));
  std::string chain = "{{ 1";
  for (int i = 0; i < 500; ++i) chain += " + 1";
  EXPECT_TRUE(IsError(ParseError(chain + " }}"), kInvalid, {"nested more than 100 levels"}));
  std::string filters = "{{ 'x'";
  for (int i = 0; i < 500; ++i) filters += "|trim";
  EXPECT_TRUE(IsError(ParseError(filters + " }}"), kInvalid, {"nested more than 100 levels"}));
  std::string nots = "{{ " + [] { std::string s; for (int i = 0; i < 300; ++i) s += "not "; return s; }() + "x }}";
  EXPECT_TRUE(IsError(ParseError(nots), kInvalid, {"nested too deeply"}));
  std::string ifs;
  for (int i = 0; i < 100; ++i) ifs += "{% if x %}";
  EXPECT_TRUE(IsError(ParseError(ifs), kInvalid, {"statements nested more than 64 levels"}));
  // Real templates stay far below the bounds.
  std::string ok = "{{ " + std::string(40, '(') + "1" + std::string(40, ')') + " }}";
  EXPECT_TRUE(ChatTemplate::Parse(ok).ok());
}

TEST(ChatTemplateRuntimeErrorTest, RaiseExceptionReturnsExactlyTheMessage) {
  absl::Status s = RenderError("line one\n{{ raise_exception('Conversation roles must alternate user/assistant') }}");
  EXPECT_EQ(s.code(), kInvalid);
  EXPECT_EQ(s.message(), "Conversation roles must alternate user/assistant");
  s = RenderError("{% macro check(r) %}{% if r != 'user' %}{{ raise_exception('Unknown role: ' ~ r) }}{% endif %}"
                  "{% endmacro %}{% for m in ms %}{{ check(m) }}{% endfor %}",
                  R"({"ms": ["user", "wizard"]})");
  EXPECT_EQ(s.message(), "Unknown role: wizard");
}

TEST(ChatTemplateRuntimeErrorTest, UndefinedUseNamesTheConstructAndLine) {
  EXPECT_TRUE(IsError(RenderError("\n{{ a.b.c }}", R"({"a": {}})"), kInvalid,
                      {"chat template line 2: 'dict object' has no attribute 'b'"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing.x }}"), kInvalid, {"line 1: 'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing[0] }}"), kInvalid, {"'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing() }}"), kInvalid, {"'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing + 1 }}"), kInvalid, {"'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing < 1 }}"), kInvalid, {"'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing|int }}"), kInvalid, {"'nothing' is undefined"}));
  EXPECT_TRUE(IsError(RenderError("{{ [1][5].x }}"), kInvalid, {"list object has no element 5"}));
  EXPECT_TRUE(IsError(RenderError("{% set ns = namespace() %}{{ ns.a.b }}"), kInvalid,
                      {"'jinja2.utils.Namespace object' has no attribute 'a'"}));
}

TEST(ChatTemplateRuntimeErrorTest, TypeErrorsUsePythonWording) {
  EXPECT_TRUE(IsError(RenderError("{{ 1 + 'a' }}"), kInvalid, {"unsupported operand type(s) for +: 'int' and 'str'"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'a' + 1 }}"), kInvalid, {"can only concatenate str (not \"int\") to str"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'a' < 1 }}"), kInvalid, {"'<' not supported between instances of 'str' and 'int'"}));
  EXPECT_TRUE(IsError(RenderError("{{ 1 // 0 }}"), kInvalid, {"integer division or modulo by zero"}));
  EXPECT_TRUE(IsError(RenderError("{{ 1 / 0 }}"), kInvalid, {"division by zero"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'x'() }}"), kInvalid, {"'str' object is not callable"}));
  EXPECT_TRUE(IsError(RenderError("{{ 1 in 'abc' }}"), kInvalid, {"'in <string>' requires string as left operand"}));
  EXPECT_TRUE(IsError(RenderError("{{ 1 in none }}"), kInvalid, {"argument of type 'NoneType' is not iterable"}));
  EXPECT_TRUE(IsError(RenderError("{% for x in 5 %}{% endfor %}"), kInvalid, {"'int' object is not iterable"}));
  EXPECT_TRUE(IsError(RenderError("{% for a, b in [1] %}{% endfor %}"), kInvalid, {"cannot unpack non-iterable int object"}));
  EXPECT_TRUE(IsError(RenderError("{% for a, b in [[1, 2, 3]] %}{% endfor %}"), kInvalid,
                      {"too many values to unpack (expected 2)"}));
  EXPECT_TRUE(IsError(RenderError("{% set a, b = [1] %}"), kInvalid, {"not enough values to unpack (expected 2, got 1)"}));
  EXPECT_TRUE(IsError(RenderError("{{ ([1]|select)|length }}"), kInvalid, {"object of type 'generator' has no len()"}));
  EXPECT_TRUE(IsError(RenderError("{{ nothing|tojson }}"), kInvalid, {"Object of type Undefined is not JSON serializable"}));
  EXPECT_TRUE(IsError(RenderError("{{ {[1]: 2} }}"), kInvalid, {"unhashable type: 'list'"}));
  EXPECT_TRUE(IsError(RenderError("{{ [1, 2][::0] }}"), kInvalid, {"slice step cannot be zero"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'a,b'.split('') }}"), kInvalid, {"empty separator"}));
  EXPECT_TRUE(IsError(RenderError("{{ 9223372036854775807 + 1 }}"), kInvalid, {"integer overflow in \"+\""}));
  EXPECT_TRUE(IsError(RenderError("{{ '%s %s' % (1,) }}"), kInvalid, {"not enough arguments for format string"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'x' % 5 }}"), kInvalid, {"not all arguments converted during string formatting"}));
  EXPECT_TRUE(IsError(RenderError("{{ '%z' % 1 }}"), kInvalid, {"unsupported format character 'z' (0x7a) at index 1"}));
  EXPECT_TRUE(IsError(RenderError("{{ '%d' % 'a' }}"), kInvalid, {"%d format: a real number is required, not str"}));
  EXPECT_TRUE(IsError(RenderError("{{ '%(a)s' % [1] }}"), kInvalid, {"list indices must be integers or slices, not str"}));
  EXPECT_TRUE(IsError(RenderError("{{ [1]|join(1, 2, 3) }}"), kInvalid, {"filter \"join\" takes at most 2 argument(s)"}));
  EXPECT_TRUE(IsError(RenderError("{{ 'x'|trim(bogus=1) }}"), kInvalid, {"unexpected keyword argument 'bogus'"}));
  EXPECT_TRUE(IsError(RenderError("{{ ([1]|map)|list }}"), kInvalid, {"map requires a filter argument"}));
  EXPECT_TRUE(IsError(RenderError("{{ [1]|map('wordwrap')|list }}"), kInvalid, {"filter \"wordwrap\" is not supported"}));
  EXPECT_TRUE(IsError(RenderError("{{ x|dictsort }}", R"({"x": [1]})"), kInvalid, {"'list' object has no attribute 'items'"}));
  EXPECT_TRUE(IsError(RenderError("{{ range(3)|tojson }}"), kInvalid, {"Object of type range is not JSON serializable"}));
  EXPECT_TRUE(IsError(RenderError("{{ d.items()|tojson }}", R"({"d": {}})"), kInvalid,
                      {"Object of type dict_items is not JSON serializable"}));
  EXPECT_TRUE(IsError(RenderError("{{ range(3) + [1] }}"), kInvalid,
                      {"unsupported operand type(s) for +: 'range' and 'list'"}));
}

TEST(ChatTemplateRuntimeErrorTest, GeneratorFiltersFailWhenConsumed) {
  // As in jinja2, map, select, unique and items only raise once iterated.
  EXPECT_TRUE(RenderText("{% set g = 5|map('upper') %}ok").ok());
  EXPECT_TRUE(IsError(RenderError("{{ (5|map('upper'))|list }}"), kInvalid, {"'int' object is not iterable"}));
  EXPECT_TRUE(IsError(RenderError("{% for x in 'x'|items %}{% endfor %}"), kInvalid,
                      {"Can only get item pairs from a mapping."}));
  EXPECT_TRUE(IsError(RenderError("{{ ([[1]]|unique)|first }}"), kInvalid, {"unhashable type: 'list'"}));
}

TEST(ChatTemplateRuntimeErrorTest, ImmutableSandbox) {
  EXPECT_TRUE(IsError(RenderError("{% set xs = [1] %}{{ xs.append(2) }}"), kInvalid,
                      {"access to attribute 'append' of 'list' object is unsafe."}));
  EXPECT_TRUE(IsError(RenderError("{{ d.update({}) }}", R"({"d": {}})"), kInvalid,
                      {"access to attribute 'update' of 'dict' object is unsafe."}));
  EXPECT_TRUE(IsError(RenderError("{{ d.pop('a') }}", R"({"d": {"a": 1}})"), kInvalid, {"'pop' of 'dict'"}));
  // Reading the attribute alone is harmless, as in jinja2.
  EXPECT_EQ(*RenderText("[{{ [1].append }}][{{ {}.__class__ }}]"), "[][]");
  EXPECT_TRUE(IsError(RenderError("{% set xs = [1] %}{% set xs.a = 1 %}"), kInvalid,
                      {"cannot assign attribute on non-namespace object"}));
}

TEST(ChatTemplateRuntimeErrorTest, UnsupportedMethodsAndGlobals) {
  EXPECT_TRUE(IsError(RenderError("\n\n{{ 'x'.zfill(3) }}"), kInvalid, {"line 3: method str.zfill() is not supported"}));
  EXPECT_TRUE(IsError(RenderError("{{ cycler('a') }}"), kInvalid, {"global function \"cycler\" is not supported"}));
  EXPECT_TRUE(IsError(RenderError("{{ '{:>5}'.format(1) }}"), kInvalid, {"format specifications"}));
  EXPECT_TRUE(IsError(RenderError("{{ range(200000)|length }}"), kInvalid, {"MAX_RANGE (100000)"}));
  EXPECT_TRUE(IsError(RenderError("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"), kInvalid,
                      {"macro 'm' takes not more than 1 argument(s)"}));
  EXPECT_TRUE(IsError(RenderError("{% macro m(a) %}{% endmacro %}{{ m(b=2) }}"), kInvalid,
                      {"macro 'm' takes no keyword argument 'b'"}));
}

TEST(ChatTemplateRuntimeErrorTest, ContextMustBeValid) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ x }}");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(IsError(t->Render(nlohmann::ordered_json::array()).status(), kInvalid, {"must be a JSON object"}));
  nlohmann::ordered_json bad_utf8 = {{"x", std::string("\xc3\x28")}};
  EXPECT_TRUE(IsError(t->Render(bad_utf8).status(), kInvalid, {"context.x", "not valid UTF-8"}));
  nlohmann::ordered_json huge = {{"x", nlohmann::ordered_json::number_unsigned_t{18446744073709551615u}}};
  EXPECT_TRUE(IsError(t->Render(huge).status(), kInvalid, {"beyond 64 bits"}));
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 300; ++i) deep = nlohmann::ordered_json::array({deep});
  EXPECT_TRUE(IsError(t->Render({{"x", deep}}).status(), kInvalid, {"nested more than 128 levels"}));
}

}  // namespace
}  // namespace adapterd::tmpl
