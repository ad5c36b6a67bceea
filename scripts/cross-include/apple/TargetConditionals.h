/* Stand-in for the macOS SDK header, for scripts/check-cross.sh only: lets ring's build script
   compile its C for x86_64-apple-darwin on Linux during a type-check. Never used to link. */
#pragma once
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_SIMULATOR 0
