//! placeholder: project definitions
