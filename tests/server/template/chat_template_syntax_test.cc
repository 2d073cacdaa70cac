// Whitespace control and statements of the chat template subset, checked
// against jinja2's own output for each case (see template_test_util.h).
#include "gtest/gtest.h"
#include "tests/server/template/template_test_util.h"

namespace adapterd::tmpl {
namespace {

using testing::ExpectRenders;
using testing::RenderCase;

const RenderCase kWhitespaceCases[] = {
    {"trim_blocks drops the newline after a block tag",
     R"tpl({% if true %}
yes
{% endif %}
after
)tpl",
     R"tpl({})tpl",
     "yes\nafter"},
    {"lstrip_blocks strips indentation before a block tag",
     R"tpl(a
    {% if true %}
    b
    {% endif %}
c)tpl",
     R"tpl({})tpl",
     "a\n    b\nc"},
    {"lstrip_blocks leaves variable tags alone",
     R"tpl(a
    {{ 'x' }}
)tpl",
     R"tpl({})tpl",
     "a\n    x"},
    {"lstrip_blocks needs only whitespace before the tag",
     R"tpl(a  {% if true %}b{% endif %})tpl",
     R"tpl({})tpl",
     "a  b"},
    {"lstrip_blocks applies at the start of the template",
     R"tpl(  {% if true %}x{% endif %})tpl",
     R"tpl({})tpl",
     "x"},
    {"lstrip_blocks with tabs",
     "\t\t{% if true %}\n\tx\n{% endif %}",
     R"tpl({})tpl",
     "\tx\n"},
    {"lstrip_blocks applies to comments",
     R"tpl(a
   {# note #}
b)tpl",
     R"tpl({})tpl",
     "a\nb"},
    {"minus strips all whitespace before",
     "a \n\t {%- if true %}b{% endif %}",
     R"tpl({})tpl",
     "ab"},
    {"minus strips all whitespace after",
     R"tpl({% if true -%}  

 b{% endif %})tpl",
     R"tpl({})tpl",
     "b"},
    {"variable minus both sides",
     R"tpl(a   {{- 'x' -}}   
 b)tpl",
     R"tpl({})tpl",
     "axb"},
    {"plus keeps indentation",
     R"tpl(a
  {%+ if true %}b{% endif %})tpl",
     R"tpl({})tpl",
     "a\n  b"},
    {"plus on the end keeps the newline",
     R"tpl({% if true +%}
b{% endif %})tpl",
     R"tpl({})tpl",
     "\nb"},
    {"comment with minus",
     R"tpl(a  {#- c -#}  b)tpl",
     R"tpl({})tpl",
     "ab"},
    {"comment spanning lines is dropped",
     R"tpl(x{# a
b
#}
y)tpl",
     R"tpl({})tpl",
     "xy"},
    {"one trailing newline is dropped",
     R"tpl(abc
)tpl",
     R"tpl({})tpl",
     "abc"},
    {"only one trailing newline is dropped",
     R"tpl(abc

)tpl",
     R"tpl({})tpl",
     "abc\n"},
    {"CRLF becomes LF",
     "a\r\nb\r\n{% if true %}\r\nc{% endif %}",
     R"tpl({})tpl",
     "a\nb\nc"},
    {"raw block",
     R"tpl({% raw %}{{ not }} {% evaluated %}{% endraw %})tpl",
     R"tpl({})tpl",
     "{{ not }} {% evaluated %}"},
    {"raw keeps the newline after it",
     R"tpl({% raw %}
x
{% endraw %}
y)tpl",
     R"tpl({})tpl",
     "\nx\ny"},
    {"set line leaves nothing",
     R"tpl({% set x = 1 %}
{{ x }})tpl",
     R"tpl({})tpl",
     "1"},
    {"for loop lines",
     R"tpl({% for i in [1, 2] %}
  {{ i }}
{% endfor %}
)tpl",
     R"tpl({})tpl",
     "  1\n  2\n"},
    {"block tag after text on a line keeps the text",
     R"tpl(text {% if true %}
x{% endif %})tpl",
     R"tpl({})tpl",
     "text x"},
    {"whitespace control inside loops",
     R"tpl({%- for m in ['a', 'b'] -%}
  [{{ m }}]
{%- endfor -%}
)tpl",
     R"tpl({})tpl",
     "[a][b]"},
    {"variable end does not trim",
     R"tpl({{ 'a' }}
b)tpl",
     R"tpl({})tpl",
     "a\nb"},
    {"nested blocks with lstrip",
     R"tpl({% for i in [1] %}
    {% if i %}
        v{{ i }}
    {% endif %}
{% endfor %})tpl",
     R"tpl({})tpl",
     "        v1\n"},
    {"unicode whitespace is stripped by minus",
     R"tpl(a　{%- if true %}b{% endif %})tpl",
     R"tpl({})tpl",
     "ab"},
    {"text with braces that are not tags",
     R"tpl({ x } {x} }} %} #})tpl",
     R"tpl({})tpl",
     "{ x } {x} }} %} #}"},
    {"a comment opened at the very end is accepted",
     R"tpl(a{#)tpl",
     R"tpl({})tpl",
     "a"},
    {"a raw tag at the very end is accepted",
     R"tpl(a{% raw %})tpl",
     R"tpl({})tpl",
     "a"},
};

const RenderCase kStatementCases[] = {
    {"if elif else",
     R"tpl({% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %};{% endfor %})tpl",
     R"tpl({})tpl",
     "one;two;many;"},
    {"if with a tuple test",
     R"tpl({% if 1, 2 %}t{% endif %})tpl",
     R"tpl({})tpl",
     "t"},
    {"for over a dict gives keys",
     R"tpl({% for k in d %}{{ k }},{% endfor %})tpl",
     R"tpl({"d": {"b": 1, "a": 2}})tpl",
     "b,a,"},
    {"for over a string",
     R"tpl({% for c in 'héllo' %}{{ c }}.{% endfor %})tpl",
     R"tpl({})tpl",
     "h.\xc3""\xa9"".l.l.o."},
    {"for else on empty",
     R"tpl({% for x in [] %}x{% else %}empty{% endfor %})tpl",
     R"tpl({})tpl",
     "empty"},
    {"for else on undefined",
     R"tpl({% for x in nothing %}x{% else %}empty{% endfor %})tpl",
     R"tpl({})tpl",
     "empty"},
    {"for else when the filter removes everything",
     R"tpl({% for x in [1, 2] if x > 5 %}x{% else %}none{% endfor %})tpl",
     R"tpl({})tpl",
     "none"},
    {"loop variables",
     R"tpl({% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %})tpl",
     R"tpl({})tpl",
     "1032TrueFalse3|2121FalseFalse3|3210FalseTrue3|"},
    {"loop previtem and nextitem",
     R"tpl({% for x in [1, 2, 3] %}[{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}]{% endfor %})tpl",
     R"tpl({})tpl",
     "[<1>2][1<2>3][2<3>]"},
    {"loop previtem is undefined on the first item",
     R"tpl({% for x in [1, 2] %}{{ loop.previtem is defined }}{{ loop.nextitem is defined }}{% endfor %})tpl",
     R"tpl({})tpl",
     "FalseTrueTrueFalse"},
    {"loop cycle and depth",
     R"tpl({% for x in range(4) %}{{ loop.cycle('a', 'b', 'c') }}{{ loop.depth }}{{ loop.depth0 }}{% endfor %})tpl",
     R"tpl({})tpl",
     "a10b10c10a10"},
    {"inline loop filter counts filtered items",
     R"tpl({% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{{ ',' if not loop.last }}{% endfor %})tpl",
     R"tpl({"messages": [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]})tpl",
     "1/2:user,2/2:assistant"},
    {"tuple unpacking over items",
     R"tpl({% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %})tpl",
     R"tpl({"d": {"z": 1, "a": [1, 2]}})tpl",
     "z=1;a=[1, 2];"},
    {"parenthesized tuple unpacking",
     R"tpl({% for (a, b) in [[1, 2], 'xy'] %}{{ a }}{{ b }}{% endfor %})tpl",
     R"tpl({})tpl",
     "12xy"},
    {"nested loops and outer loop",
     R"tpl({% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ loop.index }}{{ b }} {% endfor %}{% endfor %})tpl",
     R"tpl({})tpl",
     "11x 12y 21x 22y "},
    {"break and continue",
     R"tpl({% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %})tpl",
     R"tpl({})tpl",
     "0134"},
    {"break in a nested loop ends only that loop",
     R"tpl({% for a in [1, 2] %}{% for b in [1, 2, 3] %}{% if b == 2 %}{% break %}{% endif %}{{ a }}{{ b }} {% endfor %}{% endfor %})tpl",
     R"tpl({})tpl",
     "11 21 "},
    {"set and reuse",
     R"tpl({% set x = 'a' ~ 'b' %}{% set y = x * 2 %}{{ y }})tpl",
     R"tpl({})tpl",
     "abab"},
    {"set with tuple unpacking",
     R"tpl({% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, d = [3, 4] %}{{ c + d }})tpl",
     R"tpl({})tpl",
     "127"},
    {"set inside a loop lasts one iteration",
     R"tpl({% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }};{% endfor %}{{ x }})tpl",
     R"tpl({})tpl",
     "01;02;0"},
    {"set inside if at top level persists",
     R"tpl({% if true %}{% set x = 5 %}{% endif %}{{ x }})tpl",
     R"tpl({})tpl",
     "5"},
    {"namespace carries state out of a loop",
     R"tpl({% set ns = namespace(found=false, n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }})tpl",
     R"tpl({})tpl",
     "True 6"},
    {"namespace from a dict and new attributes",
     R"tpl({% set ns = namespace({'a': 1}) %}{% set ns.b = 2 %}{{ ns.a }}{{ ns.b }}{{ ns.c is defined }})tpl",
     R"tpl({})tpl",
     "12False"},
    {"block set",
     R"tpl({% set text %}
Hello {{ name }}!
{% endset %}[{{ text }}])tpl",
     R"tpl({"name": "Ada"})tpl",
     "[Hello Ada!\n]"},
    {"block set bodies have their own scope",
     R"tpl({% set x = 1 %}{% set blk %}{% set x = 2 %}{{ x }}{% endset %}{{ blk }}{{ x }})tpl",
     R"tpl({})tpl",
     "21"},
    {"break inside a block set leaves the loop before the assignment",
     R"tpl({% for i in [1, 2] %}{% set blk %}a{% if i == 2 %}{% break %}{% endif %}{% endset %}[{{ blk }}]{% endfor %})tpl",
     R"tpl({})tpl",
     "[a]"},
    {"for else runs when no iteration completed",
     R"tpl({% for i in [1, 2] %}{% if true %}{% continue %}{% endif %}x{% else %}E1{% endfor %}|{% for i in [1] %}{% break %}{% else %}E2{% endfor %}|{% for i in [1, 2] %}{% if i == 2 %}{% break %}{% endif %}{% else %}E3{% endfor %})tpl",
     R"tpl({})tpl",
     "E1|E2|"},
    {"for else has its own scope",
     R"tpl({% set x = 1 %}{% for i in [] %}{% else %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }})tpl",
     R"tpl({})tpl",
     "21"},
    {"block set on a namespace",
     R"tpl({% set ns = namespace() %}{% set ns.t %}v{{ 1 + 1 }}{% endset %}{{ ns.t }})tpl",
     R"tpl({})tpl",
     "v2"},
    {"macro with defaults and keywords",
     R"tpl({% macro m(a, b=2, c='x') %}{{ a }}-{{ b }}-{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 3) }} {{ m(c='z', a=0) }} {{ m() }})tpl",
     R"tpl({})tpl",
     "1-2-x 1-3-x 0-2-z -2-x"},
    {"macro sees variables set after it",
     R"tpl({% set x = 1 %}{% macro show() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ show() }})tpl",
     R"tpl({})tpl",
     "2"},
    {"macro sets do not leak",
     R"tpl({% macro m() %}{% set y = 5 %}{{ y }}{% endmacro %}{{ m() }}{{ y is defined }})tpl",
     R"tpl({})tpl",
     "5False"},
    {"recursive macro",
     R"tpl({% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }})tpl",
     R"tpl({})tpl",
     "120"},
    {"macro updates a namespace",
     R"tpl({% set ns = namespace(a=1) %}{% macro m() %}{% set ns.a = 7 %}{% endmacro %}{{ m() }}{{ ns.a }})tpl",
     R"tpl({})tpl",
     "7"},
    {"macro defined in a loop sees the loop variable",
     R"tpl({% for i in [1, 2] %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %})tpl",
     R"tpl({})tpl",
     "12"},
    {"generation block renders its body",
     R"tpl({% generation %}gen{{ 1 }}{% endgeneration %})tpl",
     R"tpl({})tpl",
     "gen1"},
    {"statements nested in comments are ignored",
     R"tpl({# {% if %} #}ok)tpl",
     R"tpl({})tpl",
     "ok"},
};

TEST(ChatTemplateWhitespaceTest, MatchesJinja) {
  for (const RenderCase& c : kWhitespaceCases) ExpectRenders(c);
}

TEST(ChatTemplateStatementTest, MatchesJinja) {
  for (const RenderCase& c : kStatementCases) ExpectRenders(c);
}

}  // namespace
}  // namespace adapterd::tmpl
