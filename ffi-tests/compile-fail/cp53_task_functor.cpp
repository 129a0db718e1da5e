// CP.53: a functor whose operator() is a task taking an rvalue reference.
// expect: CP.53
#include <coframe.hpp>

#include <string>

struct Measure {
#ifdef COFRAME_FAIL
    coframe::task<std::size_t> operator()(std::string &&s) const { co_return s.size(); }
#else
    coframe::task<std::size_t> operator()(std::string s) const { co_return s.size(); }
#endif
};

int main()
{
    coframe::runtime rt(1);
    return coframe::spawn(rt, Measure{}, std::string("abc")).get() == 3 ? 0 : 1;
}
