//! netns (work in progress)
