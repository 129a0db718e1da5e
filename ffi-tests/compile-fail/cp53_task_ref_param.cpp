// CP.53: a task function with a reference parameter passed to spawn.
// expect: CP.53
#include <coframe.hpp>

#include <string>

#ifdef COFRAME_FAIL
coframe::task<std::size_t> length(const std::string &s) { co_return s.size(); }
#else
coframe::task<std::size_t> length(std::string s) { co_return s.size(); }
#endif

int main()
{
    coframe::runtime rt(1);
    return coframe::spawn(rt, length, std::string("four")).get() == 4 ? 0 : 1;
}
